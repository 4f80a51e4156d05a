"""A collection's sources: the writes that replace or delete a source's chunks, and the
content hashes and counts that ingestion and the CLI read back.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from retrievers.schema import (
    ADD_POSTINGS,
    COUNT_TERMS,
    chunk_table,
    postings_table,
    terms_table,
    vector_literal,
)

_DROP_POSTINGS = (
    "DELETE FROM {p} WHERE (term, chunk) IN (SELECT word, c.id FROM {t} c,"
    " unnest(tsvector_to_array(c.tsv)) AS word WHERE {w})"
)


async def _update_index(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    sources: Sequence[str],
    sign: int,
) -> None:
    """Add (sign 1, once the sources' chunks are written) or take away (sign -1, before they
    are deleted) their term statistics and postings."""
    table = chunk_table(collection)
    postings = postings_table(collection)
    only = sql.SQL("c.source = ANY(%s)")
    change = _DROP_POSTINGS if sign < 0 else ADD_POSTINGS
    await conn.execute(sql.SQL(change).format(p=postings, t=table, w=only), (list(sources),))
    await conn.execute(
        sql.SQL(COUNT_TERMS).format(s=terms_table(collection), t=table, w=only),
        (sign, list(sources), list(sources), list(sources)),
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
        await _update_index(conn, collection, [source], -1)
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
        await _update_index(conn, collection, [source], 1)
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
            await _update_index(conn, collection, gone, -1)
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
