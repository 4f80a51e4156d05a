"""`agentgraph ingest` and `agentgraph search`: the document store from the terminal.

Heavy imports (the embedding model, the store) happen inside the commands, so `--help` and
the other commands stay fast.
"""

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from app.settings import Settings
from cli.render import err, out, print_json

if TYPE_CHECKING:
    from app.embeddings import Embedder
    from retrievers.ingest import IngestReport
    from retrievers.store import Store

RunFn = Callable[[Callable[[Settings], Coroutine[Any, Any, int]]], None]
Mode = Literal["dense", "fulltext", "hybrid"]

CollectionOpt = Annotated[
    str | None,
    typer.Option("--collection", "-c", help="Collection name (default: AGENTGRAPH_COLLECTION)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout only.")]


def register(app: typer.Typer, run: RunFn) -> None:
    """Add the document commands to the CLI."""

    @app.command()
    def ingest(
        paths: Annotated[list[Path], typer.Argument(help="Files and directories.")],
        collection: CollectionOpt = None,
        delete: Annotated[
            bool, typer.Option("--delete", help="Remove these sources instead of adding them.")
        ] = False,
        chunk_size: Annotated[int | None, typer.Option(min=100, help="Characters a chunk.")] = None,
        chunk_overlap: Annotated[
            int | None, typer.Option(min=0, help="Characters shared by neighbours.")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Ingest Markdown, text, HTML, PDF and BEIR corpus.jsonl files into a collection."""

        async def go(settings: Settings) -> int:
            from retrievers.service import open_collection

            name = collection or settings.collection
            if not as_json:
                err.print("[dim]loading the embedding model and opening the store…[/dim]")
            async with open_collection(settings, name, create=not delete) as (store, embedder):
                if delete:
                    gone: list[str] = []
                    for path in paths:
                        gone += await store.delete_sources(str(path.resolve()))
                    sources, chunks = await store.count()
                    if as_json:
                        print_json({"collection": name, "deleted": gone, "chunks": chunks})
                    else:
                        out.print(f"deleted {len(gone)} source(s) from {name!r}", markup=False)
                        for source in gone:
                            out.print(f"  {source}", markup=False)
                    return 0
                report = await _ingest_with_progress(
                    store,
                    embedder,
                    paths,
                    chunk_size=chunk_size or settings.chunk_size,
                    chunk_overlap=chunk_overlap
                    if chunk_overlap is not None
                    else settings.chunk_overlap,
                    quiet=as_json,
                )
                sources, chunks = await store.count()
            document = {
                "collection": name,
                "added": report.added,
                "replaced": report.replaced,
                "unchanged": len(report.unchanged),
                "skipped": [{"source": s.source, "reason": s.reason} for s in report.skipped],
                "chunks_written": report.chunks,
                "chunks_per_s": round(report.chunks_per_s, 1),
                "seconds": round(report.seconds, 2),
                "collection_sources": sources,
                "collection_chunks": chunks,
            }
            if as_json:
                print_json(document)
            else:
                out.print(
                    f"{name}: {len(report.added)} added, {len(report.replaced)} replaced, "
                    f"{len(report.unchanged)} unchanged, {len(report.skipped)} skipped; "
                    f"{report.chunks} chunks written in {report.seconds:.1f} s "
                    f"({report.chunks_per_s:.1f} chunks/s); the collection holds {sources} "
                    f"sources, {chunks} chunks",
                    markup=False,
                )
                for s in report.skipped:
                    err.print(f"skipped {escape(s.source)}: {escape(s.reason)}")
            return 0

        run(go)

    @app.command()
    def search(
        query: Annotated[str, typer.Argument(help="What to look for.")],
        k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="How many.")] = 5,
        collection: CollectionOpt = None,
        mode: Annotated[Mode, typer.Option(help="dense, fulltext or hybrid.")] = "hybrid",
        source: Annotated[
            str | None, typer.Option(help="Only this source, or sources under this path.")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Print the chunks a query retrieves, ranked, with scores."""

        where = str(Path(source).resolve()) if source else None

        async def go(settings: Settings) -> int:
            from retrievers.service import open_collection
            from retrievers.service import search as run_search

            name = collection or settings.collection
            async with open_collection(settings, name) as (store, embedder):
                hits = await run_search(store, embedder, query, k=k, mode=mode, source=where)
            if as_json:
                print_json(
                    {
                        "collection": name,
                        "mode": mode,
                        "hits": [
                            {
                                "chunk_id": h.chunk_id,
                                "source": h.source,
                                "title": h.title,
                                "position": h.position,
                                "score": h.score,
                                "content": h.content,
                            }
                            for h in hits
                        ],
                    }
                )
                return 0
            table = Table(title=f"{mode} search in {escape(name)}", title_justify="left")
            for column in ("#", "score", "chunk", "source", "text"):
                table.add_column(column, overflow="fold")
            for rank, h in enumerate(hits, 1):
                table.add_row(
                    str(rank),
                    f"{h.score:.4f}",
                    escape(h.chunk_id),
                    escape(h.source),
                    escape(h.content[:300]),
                )
            out.print(table)
            return 0

        run(go)


async def _ingest_with_progress(
    store: "Store",
    embedder: "Embedder",
    paths: list[Path],
    *,
    chunk_size: int,
    chunk_overlap: int,
    quiet: bool,
) -> "IngestReport":
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from retrievers.ingest import ingest as run_ingest
    from retrievers.loaders import discover

    total = len(discover(paths)[0])
    with Progress(
        TextColumn("ingesting"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} files"),
        TextColumn("{task.fields[chunks]} chunks, {task.fields[rate]:.1f} chunks/s"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("ingest", total=total, chunks=0, rate=0.0)

        def update(report: "IngestReport", files_done: int) -> None:
            progress.update(
                task, completed=files_done, chunks=report.chunks, rate=report.chunks_per_s
            )

        return await run_ingest(
            store,
            embedder,
            paths,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            on_progress=update,
        )
