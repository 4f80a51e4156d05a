"""Ingestion: read files, split them, embed in batches, and replace changed sources' chunks."""

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.documents import Document as LangChainDocument
from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.embeddings import Embedder
from retrievers.loaders import Document, Skipped, discover, load_file
from retrievers.sources import Chunk
from retrievers.store import Store

logger = logging.getLogger(__name__)

EMBED_BATCH = 256
"""Chunks embedded together: documents are buffered until this many are pending."""


@dataclass
class IngestReport:
    """What an ingest did: counts, and every skipped input with the reason."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        """Chunks written per second of the whole ingest."""
        return self.chunks / self.seconds if self.seconds else 0.0


ProgressFn = Callable[[IngestReport, int], None]
"""Called after each batch with the report so far and the number of files done."""


def make_splitter(*, chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    """Return the splitter: paragraphs, then lines, then sentences, then words."""
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
    )


def split_evenly(text: str, *, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Split `text` into as few pieces of at most `chunk_size` characters as the splitter
    makes, of about equal length: a text a little over the size makes two halves, not a
    chunk and a sliver. A text of up to `chunk_size` characters stays whole."""
    if len(text) <= chunk_size:
        return [text]
    fewest = len(make_splitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap).split_text(text))
    size = math.ceil((len(text) - chunk_overlap) / fewest) + chunk_overlap
    while True:
        # Pieces end at separators, so they fall short of the size: grow it until the
        # pieces are no more than the fewest.
        pieces = make_splitter(chunk_size=size, chunk_overlap=chunk_overlap).split_text(text)
        if len(pieces) <= fewest or size >= chunk_size:
            return pieces
        size = min(chunk_size, size + max(1, size // 10))


def chunk_document(doc: Document, *, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """Split a document (`split_evenly`); a chunk's id is stable for the same source, content
    and position."""
    stem = hashlib.sha1(f"{doc.source}\n{doc.content_hash}".encode()).hexdigest()[:16]
    pieces = split_evenly(doc.text, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    pieces = [p.strip() for p in pieces]
    return [
        Chunk(chunk_id=f"{stem}-{i}", source=doc.source, title=doc.title, position=i, content=p)
        for i, p in enumerate(p for p in pieces if p)
    ]


async def ingest(
    store: Store,
    embedder: Embedder,
    paths: list[Path],
    *,
    chunk_size: int,
    chunk_overlap: int,
    on_progress: ProgressFn | None = None,
) -> IngestReport:
    """Ingest files and directories; unchanged sources are skipped, changed ones replaced.

    A file that cannot be read is recorded in the report and the rest of the batch goes in.
    """
    files, missing = discover(paths)

    def items() -> Iterator[tuple[int, Document | Skipped]]:
        for done, path in enumerate(files, 1):
            for item in load_file(path):
                yield done, item

    report = await _ingest(
        store,
        embedder,
        items(),
        files=len(files),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        on_progress=on_progress,
    )
    report.skipped[:0] = missing
    return report


async def ingest_documents(
    store: Store,
    embedder: Embedder,
    documents: Iterable[LangChainDocument],
    *,
    chunk_size: int,
    chunk_overlap: int,
) -> IngestReport:
    """Ingest LangChain `Document`s, as `ingest` does files: each is one source (its
    `metadata["source"]`, else its `id`, else a hash of its text), split and embedded;
    an unchanged source is skipped, a changed one replaced, an empty one reported."""

    def items() -> Iterator[tuple[int, Document | Skipped]]:
        for done, doc in enumerate(documents, 1):
            yield done, from_langchain(doc)

    return await _ingest(
        store, embedder, items(), files=0, chunk_size=chunk_size, chunk_overlap=chunk_overlap
    )


def from_langchain(doc: LangChainDocument) -> Document | Skipped:
    """The source a LangChain `Document` becomes (`ingest_documents`)."""
    text = doc.page_content
    digest = hashlib.sha256(text.encode()).hexdigest()
    source = str(doc.metadata.get("source") or doc.id or f"document:{digest[:16]}")
    if not text.strip():
        return Skipped(source=source, reason="empty document")
    title = str(doc.metadata.get("title") or source.rsplit("/", 1)[-1])
    return Document(source=source, title=title, text=text, content_hash=digest)


async def _ingest(
    store: Store,
    embedder: Embedder,
    items: Iterator[tuple[int, Document | Skipped]],
    *,
    files: int,
    chunk_size: int,
    chunk_overlap: int,
    on_progress: ProgressFn | None = None,
) -> IngestReport:
    """Split, embed in batches and store what `items` yields (the count of inputs done so
    far, and a document or why one was skipped)."""
    started = time.perf_counter()
    report = IngestReport()
    known = await store.source_hashes()
    pending: list[tuple[Document, list[Chunk]]] = []

    async def flush(files_done: int) -> None:
        if not pending:
            return
        texts = [f"{c.title}\n{c.content}" for _, chunks in pending for c in chunks]
        embed_started = time.perf_counter()
        vectors = await asyncio.to_thread(embedder.embed_documents, texts)
        report.embed_seconds += time.perf_counter() - embed_started
        offset = 0
        for doc, chunks in pending:
            await store.replace_source(
                doc.source,
                title=doc.title,
                content_hash=doc.content_hash,
                chunks=chunks,
                vectors=vectors[offset : offset + len(chunks)],
            )
            offset += len(chunks)
            (report.replaced if doc.source in known else report.added).append(doc.source)
            report.chunks += len(chunks)
        pending.clear()
        report.seconds = time.perf_counter() - started
        if on_progress:
            on_progress(report, files_done)

    pending_chunks = 0
    done = 0
    last_done = 0
    for done, item in items:
        if on_progress and done != last_done and last_done and not pending:
            report.seconds = time.perf_counter() - started
            on_progress(report, last_done)
        last_done = done
        if isinstance(item, Skipped):
            logger.info("skipped %s: %s", item.source, item.reason)
            report.skipped.append(item)
            continue
        if known.get(item.source) == item.content_hash:
            report.unchanged.append(item.source)
            continue
        chunks = chunk_document(item, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        pending.append((item, chunks))
        pending_chunks += len(chunks)
        if pending_chunks >= EMBED_BATCH:
            await flush(done)
            pending_chunks = 0
    await flush(files or done)
    report.seconds = time.perf_counter() - started
    if on_progress:
        on_progress(report, files or done)
    return report
