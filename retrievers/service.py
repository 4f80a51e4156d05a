"""Retrieval as the application uses it: settings in, an open collection, hits or matches out."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.embeddings import Embedder, embedder_name, get_embedder
from app.pg import resolve_database_url
from app.settings import Settings, get_settings
from retrievers.connect import list_collections, open_store
from retrievers.search import Hit, SearchMode
from retrievers.store import Store


@asynccontextmanager
async def open_collection(
    settings: Settings,
    collection: str,
    *,
    create: bool = False,
    url: str | None = None,
    pool: AsyncConnectionPool[Any] | None = None,
) -> AsyncIterator[tuple[Store, Embedder]]:
    """Open a collection with the configured embedding model.

    Args:
        settings: Where the embedding model and (unless `url`) the database come from.
        collection: The collection's name.
        create: Create the collection (and the store's tables) if missing.
        url: The database; default: the settings' own (embedded or `DATABASE_URL`).
        pool: An open pool on `url` to borrow a connection from.

    Raises:
        RetrievalError: unknown collection (unless `create`), or a different dimension.
        DatabaseError: Postgres cannot be reached or lacks pgvector.
        ModelError: the embedding model cannot be loaded.
    """
    embedder = await asyncio.to_thread(get_embedder, settings.embeddings, settings=settings)
    target = url if url is not None else await asyncio.to_thread(resolve_database_url, settings)
    async with open_store(
        target,
        collection,
        embedding_model=embedder.name,
        dim=embedder.dim,
        create=create,
        pool=pool,
    ) as store:
        yield store, embedder


async def search(
    store: Store,
    embedder: Embedder,
    query: str,
    *,
    k: int,
    mode: SearchMode = "hybrid",
    source: str | None = None,
    candidates: int | None = None,
    rrf_k: int | None = None,
) -> list[Hit]:
    """Embed the query (unless full-text) and search the collection (see `Store.search`).

    A hybrid search embeds the query in a worker thread while Postgres runs its full-text
    half, so the embedding costs no time of its own when full text takes longer.
    """
    options: dict[str, Any] = {
        "k": k,
        "mode": mode,
        "source": source,
        "candidates": candidates,
        "rrf_k": rrf_k,
    }
    if mode == "fulltext":
        return await store.search(query, None, **options)
    embedding = asyncio.ensure_future(asyncio.to_thread(embedder.embed_query, query))
    try:
        return await store.search(query, embedding, **options)
    finally:
        if not embedding.done():
            embedding.cancel()  # the search failed before it needed the vector
        elif not embedding.cancelled():
            embedding.exception()  # retrieved: a failed embedding was raised or is moot


@dataclass(frozen=True)
class Match:
    """The collection whose closest chunk is most similar to a query."""

    collection: str
    similarity: float
    """Cosine similarity of the query and that chunk."""
    chunk_id: str


@dataclass(frozen=True)
class Library:
    """The document collections a graph reads: which database, and how to reach it.

    A graph is compiled with one, so its workers search the database its runs are stored
    in (the agent's), not whatever the process happened to open last.
    """

    url: str | None = None
    """The database; None: the settings' own (embedded or `DATABASE_URL`)."""
    pool: AsyncConnectionPool[Any] | None = None
    """An open pool on `url` (autocommit, dict rows) to borrow connections from."""
    settings: Settings | None = None
    """The embedding model, the match threshold and the default collection come from these;
    None: the process settings, read when first needed."""

    @property
    def config(self) -> Settings:
        """The settings the library works with."""
        return self.settings or get_settings()

    @property
    def default_collection(self) -> str:
        """The collection a rag step searches when none is named and none matches."""
        return self.config.collection

    @asynccontextmanager
    async def open(self, collection: str) -> AsyncIterator[tuple[Store, Embedder]]:
        """Open an existing collection for searching (changes nothing in the database)."""
        async with open_collection(self.config, collection, url=self.url, pool=self.pool) as opened:
            yield opened

    async def collections(self) -> list[str]:
        """Return the collections built with the configured embedding model.

        Collections of another model cannot be searched with this one's query vectors.
        """
        return [name for name, _ in await self._usable(self.config)]

    async def _usable(self, settings: Settings) -> list[tuple[str, int]]:
        wanted = embedder_name(settings.embeddings)
        rows = await list_collections(await self._url(settings), pool=self.pool)
        return [(r["name"], int(r["dim"])) for r in rows if r["embedding_model"] == wanted]

    async def _url(self, settings: Settings) -> str:
        if self.url is not None:
            return self.url
        return await asyncio.to_thread(resolve_database_url, settings)

    async def match(
        self, queries: Sequence[str], *, threshold: float | None = None
    ) -> list[Match | None]:
        """For each query, the collection holding the chunk most similar to it, if that
        chunk's cosine similarity reaches `threshold` (default: the settings'
        `match_threshold`); None where no collection does.

        A collection that shares no word with a query is not compared with it: the embedding
        model (seconds to load in a new process) is loaded only when some usable collection
        shares a word with some query.
        """
        settings = self.config
        if threshold is None:
            threshold = settings.match_threshold
        best: list[Match | None] = [None] * len(queries)
        vectors: dict[int, list[float]] = {}
        for name, dim in await self._usable(settings) if queries else []:
            async with self._store(settings, name, dim) as store:
                found = [i for i, q in enumerate(queries) if await store.mentions(q)]
                if missing := [i for i in found if i not in vectors]:
                    embedded = await self._embed(settings, queries, missing)
                    vectors.update(zip(missing, embedded, strict=True))
                for i in found:
                    hits = await store.dense(vectors[i], limit=1)
                    current = best[i]
                    if hits and (current is None or hits[0].score > current.similarity):
                        best[i] = Match(name, hits[0].score, hits[0].chunk_id)
        return [m if m is not None and m.similarity >= threshold else None for m in best]

    async def _embed(
        self, settings: Settings, queries: Sequence[str], which: list[int]
    ) -> list[list[float]]:
        """Embed the queries at `which`, loading the embedding model on first use."""
        embedder = await asyncio.to_thread(get_embedder, settings.embeddings, settings=settings)
        return await asyncio.to_thread(lambda: [embedder.embed_query(queries[i]) for i in which])

    @asynccontextmanager
    async def _store(self, settings: Settings, collection: str, dim: int) -> AsyncIterator[Store]:
        """Open a usable collection (see `_usable`) without loading the embedding model."""
        async with open_store(
            await self._url(settings),
            collection,
            embedding_model=embedder_name(settings.embeddings),
            dim=dim,
            pool=self.pool,
        ) as store:
            yield store
