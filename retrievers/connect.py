"""Reaching the store: connections (new or borrowed from a pool), opening a collection as a
`Store`, and listing the collections a database holds.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.errors import DatabaseError
from app.pg import redact
from retrievers.names import validate_collection
from retrievers.schema import check_collection, create_collection, ensure_terms
from retrievers.store import Store


@asynccontextmanager
async def open_store(
    url: str,
    collection: str,
    *,
    embedding_model: str,
    dim: int,
    create: bool = False,
    pool: AsyncConnectionPool[Any] | None = None,
) -> AsyncIterator[Store]:
    """Open a collection, creating it (and the store's tables) when `create` is set.

    Opening without `create` changes nothing in the database, but that a collection made
    before term statistics existed gets them (`retrievers.schema.ensure_terms`). With `pool`
    (an open pool on `url`, autocommit with dict rows) the store borrows one of its
    connections instead of opening its own.

    Raises:
        RetrievalError: bad name, unknown collection, or an embedding dimension that differs
            from the one the collection was built with.
        DatabaseError: Postgres cannot be reached or has no pgvector.
    """
    validate_collection(collection)
    async with _connection(url, pool) as conn:
        try:
            if create:
                await create_collection(conn, collection, embedding_model=embedding_model, dim=dim)
            else:
                await check_collection(conn, collection, embedding_model=embedding_model, dim=dim)
            await ensure_terms(conn, collection)
        except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
            raise DatabaseError(
                f"Postgres at {redact(url)} has no pgvector extension ({exc}); use the "
                "embedded Postgres or a server with pgvector installed"
            ) from exc
        yield Store(conn, collection)


async def list_collections(
    url: str, *, pool: AsyncConnectionPool[Any] | None = None
) -> list[dict[str, Any]]:
    """Return the collections in the store with their model and dimension (none: empty)."""
    async with _connection(url, pool) as conn:
        # Asked first rather than caught: a failed query would be an error in the server log
        # for every run on a database nothing was ingested into.
        cursor = await conn.execute("SELECT to_regclass('rag_collections') IS NOT NULL AS ok")
        row = await cursor.fetchone()
        if not (row and row["ok"]):
            return []
        cursor = await conn.execute(
            "SELECT name, embedding_model, dim FROM rag_collections ORDER BY name"
        )
        return list(await cursor.fetchall())


@asynccontextmanager
async def _connection(
    url: str, pool: AsyncConnectionPool[Any] | None
) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """Yield an autocommit connection with dict rows: from `pool` when given, else a new one.

    Raises:
        DatabaseError: Postgres cannot be reached, or the pool has no free connection.
    """
    if pool is not None:
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DatabaseError(f"no free connection to Postgres at {redact(url)}: {exc}") from exc
        return
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row, connect_timeout=15
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot reach Postgres at {redact(url)}: {exc}") from exc
    try:
        yield conn
    finally:
        await conn.close()
