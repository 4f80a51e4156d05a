"""Measure retrieval quality and speed on a BEIR-layout dataset (SciFact by default).

Ingests the dataset's `corpus.jsonl` into a collection (idempotent: a second run re-uses it),
then runs every query of the split in dense, full-text and hybrid mode and prints nDCG@10,
Recall@10, Recall@100, MRR@10, p50/p95 search latency, and the ingestion throughput.

Run from the repository root:

    python -m bench.retrieval_eval [--dataset DIR] [--split test] [--json]
                                   [--collection NAME] [--data-dir DIR] [--database-url URL]

The figures and the JSON fields are described in bench/README.md.
"""

import argparse
import asyncio
import csv
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(REPO)

from app.errors import AgentGraphError
from app.settings import Settings, get_settings
from retrievers.fusion import HYBRID_CANDIDATES
from retrievers.metrics import evaluate
from retrievers.search import SearchMode

logger = logging.getLogger("bench.retrieval_eval")

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
MODES: tuple[SearchMode, ...] = ("dense", "fulltext", "hybrid")
DEPTH = 100
"""Documents ranked per query: Recall@100 needs a hundred."""


def load_queries(dataset: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Return the split's queries (id -> text) and qrels (query id -> {doc id -> grade})."""
    qrels: dict[str, dict[str, int]] = {}
    with (dataset / "qrels" / f"{split}.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries: dict[str, str] = {}
    with (dataset / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    return queries, qrels


def doc_ids(sources: list[str], limit: int) -> list[str]:
    """Map chunk sources ('…/corpus.jsonl#ID') to document ids, first occurrence wins."""
    seen: dict[str, None] = {}
    for source in sources:
        seen.setdefault(source.rsplit("#", 1)[-1], None)
        if len(seen) == limit:
            break
    return list(seen)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Ingest (if needed), run every query in every mode, and return the figures."""
    from retrievers.ingest import ingest
    from retrievers.service import open_collection, search

    dataset: Path = args.dataset.resolve()
    queries, qrels = load_queries(dataset, args.split)
    figures: dict[str, Any] = {
        "dataset": str(dataset),
        "split": args.split,
        "queries": len(queries),
        "collection": args.collection,
        "chunk_size": args.chunk_size,
        "chunk_overlap": args.chunk_overlap,
        "candidates": args.candidates,
        "fusion": "document" if args.rrf_k is None else f"rrf-{args.rrf_k}",
        "embeddings": settings.embeddings,
    }
    stats_file = settings.data_dir / f"bench-ingest-{args.collection}.json"
    async with open_collection(settings, args.collection, create=True, url=args.database_url) as (
        store,
        embedder,
    ):
        logger.info("ingesting %s (skipped when already in %r)", dataset, args.collection)
        report = await ingest(
            store,
            embedder,
            [dataset / "corpus.jsonl"],
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
        )
        sources, chunks = await store.count()
        if report.chunks:
            ingest_figures = {
                "documents": len(report.added) + len(report.replaced),
                "chunks": report.chunks,
                "seconds": round(report.seconds, 1),
                "chunks_per_s": round(report.chunks_per_s, 1),
                "embed_seconds": round(report.embed_seconds, 1),
                "embed_only_chunks_per_s": round(report.chunks / report.embed_seconds, 1),
                "share_of_embedding_rate": round(report.embed_seconds / report.seconds, 3),
            }
            stats_file.write_text(json.dumps(ingest_figures))
            ingest_figures["this_run"] = True
        elif stats_file.exists():
            ingest_figures = {**json.loads(stats_file.read_text()), "this_run": False}
        else:
            ingest_figures = {"this_run": False, "note": "collection ingested elsewhere"}
        figures["ingest"] = ingest_figures
        figures["collection_documents"] = sources
        figures["collection_chunks"] = chunks

        # Warm up: the first queries pay for model and plan caches.
        for text in list(queries.values())[:5]:
            await search(store, embedder, text, k=10, mode="hybrid")

        results: dict[str, Any] = {}
        chunk_depth = DEPTH * args.depth_factor
        for mode in args.modes:
            run: dict[str, list[str]] = {}
            latencies: list[float] = []
            for qid, text in queries.items():
                started = time.perf_counter()
                hits = await search(
                    store,
                    embedder,
                    text,
                    k=chunk_depth,
                    mode=mode,
                    candidates=max(chunk_depth, args.candidates),
                    rrf_k=args.rrf_k,
                )
                latencies.append((time.perf_counter() - started) * 1000)
                run[qid] = doc_ids([h.source for h in hits], DEPTH)
            metrics = evaluate(run, qrels)
            results[mode] = {
                **{name: round(value, 4) for name, value in metrics.items()},
                "latency_p50_ms": round(statistics.median(latencies), 2),
                "latency_p95_ms": round(_percentile(latencies, 0.95), 2),
            }
            logger.info("%s: %s", mode, results[mode])
        figures["modes"] = results

        # What `agentgraph search` and a rag step do: hybrid, k = 10, default candidates.
        latencies = []
        for text in queries.values():
            started = time.perf_counter()
            await search(store, embedder, text, k=10, mode="hybrid")
            latencies.append((time.perf_counter() - started) * 1000)
        figures["hybrid_k10_latency_p50_ms"] = round(statistics.median(latencies), 2)
        figures["hybrid_k10_latency_p95_ms"] = round(_percentile(latencies, 0.95), 2)
        # Its parts: the query embedding alone, and the SQL of both halves alone.
        embed_ms, sql_ms = [], []
        for text in queries.values():
            started = time.perf_counter()
            vector = await asyncio.to_thread(embedder.embed_query, text)
            embedded = time.perf_counter()
            await store.search(text, vector, k=10, mode="hybrid")
            embed_ms.append((embedded - started) * 1000)
            sql_ms.append((time.perf_counter() - embedded) * 1000)
        figures["query_embedding_p50_ms"] = round(statistics.median(embed_ms), 2)
        figures["query_embedding_p95_ms"] = round(_percentile(embed_ms, 0.95), 2)
        figures["hybrid_k10_sql_p50_ms"] = round(statistics.median(sql_ms), 2)
        figures["hybrid_k10_sql_p95_ms"] = round(_percentile(sql_ms, 0.95), 2)
    return figures


def render(figures: dict[str, Any]) -> str:
    """Return the figures as a readable table."""
    lines = [
        f"{figures['dataset']} ({figures['split']}, {figures['queries']} queries), collection "
        f"{figures['collection']!r}: {figures['collection_documents']} documents, "
        f"{figures['collection_chunks']} chunks (chunk size {figures['chunk_size']}, overlap "
        f"{figures['chunk_overlap']})",
        "",
        f"{'mode':<10}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>9}{'p95 ms':>9}",
    ]
    for mode, m in figures["modes"].items():
        lines.append(
            f"{mode:<10}{m['ndcg@10']:>9.4f}{m['recall@10']:>8.4f}{m['recall@100']:>8.4f}"
            f"{m['mrr@10']:>8.4f}{m['latency_p50_ms']:>9.2f}{m['latency_p95_ms']:>9.2f}"
        )
    lines.append(
        f"hybrid at k=10 (as `agentgraph search`): p50 {figures['hybrid_k10_latency_p50_ms']} ms,"
        f" p95 {figures['hybrid_k10_latency_p95_ms']} ms (query embedding alone p50 "
        f"{figures['query_embedding_p50_ms']} / p95 {figures['query_embedding_p95_ms']} ms, "
        f"SQL alone p50 {figures['hybrid_k10_sql_p50_ms']} / p95 "
        f"{figures['hybrid_k10_sql_p95_ms']} ms)"
    )
    ing = figures["ingest"]
    if "chunks_per_s" in ing:
        lines += [
            "",
            f"ingest{'' if ing['this_run'] else ' (earlier run)'}: {ing['documents']} documents, "
            f"{ing['chunks']} chunks in {ing['seconds']} s = {ing['chunks_per_s']} chunks/s; "
            f"embedding alone {ing['embed_only_chunks_per_s']} chunks/s "
            f"({ing['share_of_embedding_rate']:.0%} of the time is embedding)",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.retrieval_eval",
        description="Retrieval quality and latency on a BEIR dataset: dense, fulltext, hybrid.",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR folder")
    parser.add_argument("--split", default="test", help="qrels split (tune on train)")
    parser.add_argument("--collection", default="scifact", help="collection to (re)use")
    parser.add_argument("--chunk-size", type=int, default=None, help="characters a chunk")
    parser.add_argument("--chunk-overlap", type=int, default=None, help="characters shared")
    parser.add_argument(
        "--candidates", type=int, default=HYBRID_CANDIDATES, help="hybrid depth per list"
    )
    parser.add_argument(
        "--rrf-k",
        type=int,
        default=None,
        help="fuse hybrid by RRF with this constant (default: the document-level fusion)",
    )
    parser.add_argument(
        "--depth-factor", type=int, default=2, help="chunks fetched per ranked document"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to score"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--database-url", default=None, help="Postgres instead of the embedded")
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded cluster's data dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logger.setLevel(logging.INFO)
    base = get_settings()
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    settings = base.model_copy(update=overrides)
    args.chunk_size = args.chunk_size or settings.chunk_size
    args.chunk_overlap = (
        args.chunk_overlap if args.chunk_overlap is not None else (settings.chunk_overlap)
    )
    try:
        figures = asyncio.run(measure(args, settings))
    except AgentGraphError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write((json.dumps(figures) if args.json else render(figures)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
