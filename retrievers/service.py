"""Retrieval as the application uses it: settings in, an open collection or hits out."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.db import resolve_database_url
from app.embeddings import Embedder, get_embedder
from app.settings import Settings
from retrievers.store import Hit, SearchMode, Store, open_store

_store_url: list[str] = []


def use_store_url(url: str | None) -> str | None:
    """Make workers search the database at `url` (the one the agent opened); None resets.

    Returns:
        The URL used before, for the caller to restore.
    """
    previous = store_url()
    _store_url.clear()
    if url:
        _store_url.append(url)
    return previous


def store_url() -> str | None:
    """Return the database URL workers search, or None for the settings' own."""
    return _store_url[0] if _store_url else None


@asynccontextmanager
async def open_collection(
    settings: Settings,
    collection: str,
    *,
    create: bool = False,
    url: str | None = None,
) -> AsyncIterator[tuple[Store, Embedder]]:
    """Open a collection with the configured embedding model.

    Raises:
        RetrievalError: unknown collection (unless `create`), or a different dimension.
        DatabaseError: Postgres cannot be reached or lacks pgvector.
        ModelError: the embedding model cannot be loaded.
    """
    embedder = await asyncio.to_thread(get_embedder, settings.embeddings, settings=settings)
    target = url if url is not None else await asyncio.to_thread(resolve_database_url, settings)
    async with open_store(
        target, collection, embedding_model=embedder.name, dim=embedder.dim, create=create
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
) -> list[Hit]:
    """Embed the query (unless full-text) and search the collection."""
    vector = None if mode == "fulltext" else await asyncio.to_thread(embedder.embed_query, query)
    return await store.search(query, vector, k=k, mode=mode, source=source)
