"""Ingestion: read files, split them, embed in batches, and replace changed sources' chunks."""

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


def chunk_document(doc: Document, splitter: RecursiveCharacterTextSplitter) -> list[Chunk]:
    """Split a document; a chunk's id is stable for the same source, content and position."""
    stem = hashlib.sha1(f"{doc.source}\n{doc.content_hash}".encode()).hexdigest()[:16]
    pieces = [p.strip() for p in splitter.split_text(doc.text)]
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
    started = time.perf_counter()
    report = IngestReport()
    splitter = make_splitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    files, missing = discover(paths)
    report.skipped.extend(missing)
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
    for done, path in enumerate(files, 1):
        for item in load_file(path):
            if isinstance(item, Skipped):
                logger.info("skipped %s: %s", item.source, item.reason)
                report.skipped.append(item)
                continue
            if known.get(item.source) == item.content_hash:
                report.unchanged.append(item.source)
                continue
            chunks = chunk_document(item, splitter)
            pending.append((item, chunks))
            pending_chunks += len(chunks)
            if pending_chunks >= EMBED_BATCH:
                await flush(done)
                pending_chunks = 0
        if on_progress and not pending:
            report.seconds = time.perf_counter() - started
            on_progress(report, done)
    await flush(len(files))
    report.seconds = time.perf_counter() - started
    return report
