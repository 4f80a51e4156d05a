"""Open a process's database: the pool (`app.pg`) and the set-up checkpointer over it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.checkpoint.saver import Saver, setup_saver
from app.pg import open_pool, resolve_database_url
from app.settings import Settings


@dataclass(frozen=True)
class Database:
    """An open pool and the checkpointer that writes through it."""

    url: str
    pool: AsyncConnectionPool[Any]
    saver: Saver


@asynccontextmanager
async def open_database(settings: Settings, *, url: str | None = None) -> AsyncIterator[Database]:
    """Open a pool and a set-up `AsyncPostgresSaver` for the process's lifetime.

    Args:
        settings: The process settings (URL, pool size, data directory).
        url: Connect here instead of what the settings say.

    Raises:
        DatabaseError: the database cannot be reached or prepared.
    """
    target = url or resolve_database_url(settings)
    pool = await open_pool(
        target, max_size=settings.db_pool_size, prepared=settings.db_prepared_statements
    )
    try:
        saver = Saver(pool)
        await setup_saver(saver, pool)
        yield Database(url=target, pool=pool, saver=saver)
    finally:
        await pool.close()
