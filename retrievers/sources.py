"""A collection's sources: the writes that replace or delete a source's chunks, and the
content hashes and counts that ingestion and the CLI read back.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from retrievers.schema import chunk_table, terms_table, vector_literal

_COUNT_TERMS = (
    "INSERT INTO {s} (term, df)"
    " SELECT term, %s * n FROM ("
    "  SELECT word AS term, count(*) AS n FROM {t}, unnest(tsvector_to_array(tsv)) AS word"
    "  WHERE source = ANY(%s) GROUP BY word"
    "  UNION ALL SELECT '', count(*) FROM {t} WHERE source = ANY(%s)) AS counted"
    " WHERE n > 0 ORDER BY term"
    " ON CONFLICT (term) DO UPDATE SET df = {s}.df + EXCLUDED.df"
)
"""Add (sign 1) or take away (sign -1) the terms of the sources' chunks, and their number
under the empty term. In term order, so that concurrent writers lock rows in one order."""


async def _count_terms(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    sources: Sequence[str],
    sign: int,
) -> None:
    await conn.execute(
        sql.SQL(_COUNT_TERMS).format(s=terms_table(collection), t=chunk_table(collection)),
        (sign, list(sources), list(sources)),
    )


@dataclass(frozen=True)
class Chunk:
    """A piece of a source, ready to store."""

    chunk_id: str
    source: str
    title: str
    position: int
    content: str


async def source_hashes(
    conn: psycopg.AsyncConnection[dict[str, Any]], collection: str
) -> dict[str, str]:
    """Return every stored source of the collection and its content hash."""
    cursor = await conn.execute(
        "SELECT source, content_hash FROM rag_sources WHERE collection = %s",
        (collection,),
    )
    return {row["source"]: row["content_hash"] for row in await cursor.fetchall()}


async def replace_source(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    source: str,
    *,
    title: str,
    content_hash: str,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
) -> None:
    """Replace a source's chunks with new ones, in one transaction."""
    table = chunk_table(collection)
    async with conn.transaction():
        await _count_terms(conn, collection, [source], -1)
        await conn.execute(sql.SQL("DELETE FROM {t} WHERE source = %s").format(t=table), (source,))
        async with conn.cursor() as cursor:
            await cursor.executemany(
                sql.SQL(
                    "INSERT INTO {t} (id, source, title, position, content, embedding)"
                    " VALUES (%s, %s, %s, %s, %s, %s::vector)"
                ).format(t=table),
                [
                    (c.chunk_id, c.source, c.title, c.position, c.content, vector_literal(v))
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
        await _count_terms(conn, collection, [source], 1)
        await conn.execute(
            "INSERT INTO rag_sources (collection, source, content_hash, title, chunks)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (collection, source) DO UPDATE SET"
            " content_hash = EXCLUDED.content_hash, title = EXCLUDED.title,"
            " chunks = EXCLUDED.chunks, ingested_at = now()",
            (collection, source, content_hash, title, len(chunks)),
        )


async def delete_sources(
    conn: psycopg.AsyncConnection[dict[str, Any]], collection: str, prefix: str
) -> list[str]:
    """Delete the sources equal to `prefix` or under it (a directory or a corpus file).

    Returns:
        The deleted sources, sorted.
    """
    async with conn.transaction():
        cursor = await conn.execute(
            "DELETE FROM rag_sources WHERE collection = %s AND (source = %s"
            " OR starts_with(source, %s) OR starts_with(source, %s)) RETURNING source",
            (collection, prefix, prefix.rstrip("/") + "/", prefix + "#"),
        )
        gone = [row["source"] for row in await cursor.fetchall()]
        if gone:
            await _count_terms(conn, collection, gone, -1)
            await conn.execute(
                sql.SQL("DELETE FROM {t} WHERE source = ANY(%s)").format(t=chunk_table(collection)),
                (gone,),
            )
    return sorted(gone)


async def count(conn: psycopg.AsyncConnection[dict[str, Any]], collection: str) -> tuple[int, int]:
    """Return the number of sources and of chunks in the collection."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM rag_sources WHERE collection = %s) AS sources,"
            " (SELECT count(*) FROM {t}) AS chunks"
        ).format(t=chunk_table(collection)),
        (collection,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["sources"]), int(row["chunks"])
