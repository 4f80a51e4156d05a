"""The `Store`: one collection on an open connection, its writes and searches as methods.

The SQL lives with its concern: `retrievers.schema` (tables, set-up, the collection check),
`retrievers.sources` (writes and counts) and `retrievers.search`; `retrievers.connect` opens
a `Store`.
"""

from collections.abc import Awaitable, Sequence
from typing import Any

import psycopg

from retrievers import search, sources
from retrievers.schema import chunk_table
from retrievers.search import Hit, SearchMode
from retrievers.sources import Chunk


class Store:
    """One collection on an open connection."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]], collection: str) -> None:
        self.conn = conn
        self.collection = collection
        self.table = chunk_table(collection)

    async def source_hashes(self) -> dict[str, str]:
        """Return every stored source and its content hash."""
        return await sources.source_hashes(self.conn, self.collection)

    async def replace_source(
        self,
        source: str,
        *,
        title: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        """Replace a source's chunks with new ones, in one transaction."""
        await sources.replace_source(
            self.conn,
            self.collection,
            source,
            title=title,
            content_hash=content_hash,
            chunks=chunks,
            vectors=vectors,
        )

    async def delete_sources(self, prefix: str) -> list[str]:
        """Delete the sources equal to `prefix` or under it (a directory or a corpus file)."""
        return await sources.delete_sources(self.conn, self.collection, prefix)

    async def count(self) -> tuple[int, int]:
        """Return the number of sources and of chunks in the collection."""
        return await sources.count(self.conn, self.collection)

    async def dense(
        self, vector: Sequence[float], *, limit: int, source: str | None = None
    ) -> list[Hit]:
        """Return the nearest chunks by cosine similarity (HNSW)."""
        return await search.dense(self.conn, self.collection, vector, limit=limit, source=source)

    async def mentions(self, text: str) -> bool:
        """Whether any chunk shares a word (an English stem, stop words aside) with `text`."""
        return await search.mentions(self.conn, self.collection, text)

    async def fulltext(self, text: str, *, limit: int, source: str | None = None) -> list[Hit]:
        """Return chunks matching any query term, ranked by BM25."""
        return await search.fulltext(self.conn, self.collection, text, limit=limit, source=source)

    async def search(
        self,
        text: str,
        vector: Sequence[float] | Awaitable[Sequence[float]] | None,
        *,
        k: int,
        mode: SearchMode = "hybrid",
        source: str | None = None,
        candidates: int | None = None,
        rrf_k: int | None = None,
    ) -> list[Hit]:
        """Return the best `k` chunks; hybrid fuses dense and full-text candidates (see
        `retrievers.search.search`).

        Args:
            text: The query text (full-text and hybrid).
            vector: The query embedding (dense and hybrid), or a task computing it: hybrid
                runs its full-text half first, while the task runs.
            k: How many chunks to return.
            mode: dense, fulltext or hybrid.
            source: Only chunks of this source, or of sources under it.
            candidates: How many of each list hybrid fuses (default: max(k, 100)).
            rrf_k: Fuse by RRF with this constant instead of `document_fusion`.

        Raises:
            RetrievalError: a dense or hybrid search without a query embedding.
        """
        return await search.search(
            self.conn,
            self.collection,
            text,
            vector,
            k=k,
            mode=mode,
            source=source,
            candidates=candidates,
            rrf_k=rrf_k,
        )
