"""Searching a collection: dense (HNSW), full text weighted by IDF, and hybrid, which fuses
the two (`retrievers.fusion`); plus `mentions`, the cheap check for any shared word.
"""

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from app.errors import RetrievalError
from retrievers.fusion import HYBRID_CANDIDATES, hybrid_fusion, rrf
from retrievers.schema import chunk_table, terms_table, vector_literal

SearchMode = Literal["dense", "fulltext", "hybrid"]


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk and its score in the mode that found it."""

    chunk_id: str
    source: str
    title: str
    position: int
    content: str
    score: float


async def search(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    text: str,
    vector: Sequence[float] | Awaitable[Sequence[float]] | None,
    *,
    k: int,
    mode: SearchMode = "hybrid",
    source: str | None = None,
    candidates: int | None = None,
    rrf_k: int | None = None,
) -> list[Hit]:
    """Return the best `k` chunks; hybrid fuses dense and full-text candidates
    (`retrievers.fusion.convex`, or reciprocal rank fusion when `rrf_k` is given).

    Args:
        conn: An autocommit connection with dict rows.
        collection: The collection to search.
        text: The query text (full-text and hybrid).
        vector: The query embedding (dense and hybrid), or a task computing it: hybrid
            runs its full-text half first, while the task runs.
        k: How many chunks to return.
        mode: dense, fulltext or hybrid.
        source: Only chunks of this source, or of sources under it.
        candidates: How many of each list hybrid fuses (default: max(k, HYBRID_CANDIDATES)).
        rrf_k: Fuse by RRF with this constant instead of the convex combination.

    Raises:
        RetrievalError: a dense or hybrid search without a query embedding.
    """
    if mode == "fulltext":
        return await fulltext(conn, collection, text, limit=k, source=source)
    if vector is None:
        raise RetrievalError(f"{mode} search needs a query embedding")
    if mode == "dense":
        return await dense(conn, collection, await _ready(vector), limit=k, source=source)
    depth = max(k, candidates or HYBRID_CANDIDATES)
    # Both lists as ids only; the text is fetched for the fused best `k` alone.
    full = await _fulltext_rows(conn, collection, text, limit=depth, source=source, text_too=False)
    near = await _dense_rows(
        conn, collection, await _ready(vector), limit=depth, source=source, text_too=False
    )
    ranks = [[r["id"] for r in near], [r["id"] for r in full]]
    if rrf_k is None:
        sources = [[r["source"] for r in rows] for rows in (near, full)]
        scored = [[(r["id"], float(r["score"])) for r in rows] for rows in (near, full)]
        fused = hybrid_fusion(ranks, sources, scored)[:k]
    else:
        fused = rrf(ranks, k=rrf_k)[:k]
    rows = await _rows(conn, collection, [i for i, _ in fused])
    return [_hit({**rows[i], "score": score}) for i, score in fused if i in rows]


async def dense(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    vector: Sequence[float],
    *,
    limit: int,
    source: str | None = None,
) -> list[Hit]:
    """Return the nearest chunks by cosine similarity (HNSW)."""
    rows = await _dense_rows(conn, collection, vector, limit=limit, source=source, text_too=True)
    hits = [_hit(r) for r in rows]
    return sorted(hits, key=lambda h: -h.score)


async def _dense_rows(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    vector: Sequence[float],
    *,
    limit: int,
    source: str | None,
    text_too: bool,
) -> list[dict[str, Any]]:
    where, params = _filter(source)
    literal = vector_literal(vector)
    query = sql.SQL(
        "SELECT c.id, {cols} 1 - (c.embedding <=> %s::vector) AS score FROM {t} c WHERE {w}"
        " ORDER BY c.embedding <=> %s::vector LIMIT %s"
    ).format(cols=_text_columns(text_too), t=chunk_table(collection), w=where)
    async with conn.transaction():
        # ef_search bounds how many candidates HNSW can return; iterative scans keep a
        # filtered search from coming back short.
        await conn.execute(
            sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(40, limit)))
        )
        if source is not None:
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor = await conn.execute(query, [literal, *params, literal, limit])
        return await cursor.fetchall()


async def fulltext(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    text: str,
    *,
    limit: int,
    source: str | None = None,
) -> list[Hit]:
    """Return chunks matching any query term, scored by the summed IDF of matched terms.

    Postgres' own `ts_rank` has no inverse document frequency; weighting each matched
    lexeme by its IDF is what makes full-text ranking competitive with BM25.
    """
    rows = await _fulltext_rows(conn, collection, text, limit=limit, source=source, text_too=True)
    return [_hit(r) for r in rows]


async def _fulltext_rows(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    text: str,
    *,
    limit: int,
    source: str | None,
    text_too: bool,
) -> list[dict[str, Any]]:
    where, params = _filter(source)
    # Each term's document frequency, and the number of chunks under the empty term, come
    # from the collection's term statistics (`retrievers.schema`): one indexed row each.
    # Rank ids by summed IDF first (narrow rows), then fetch and tie-break only the best:
    # ts_rank over every matching row costs more than the whole rest of the query.
    query = sql.SQL(
        "WITH terms AS (SELECT DISTINCT word"
        "  FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS word),"
        " total AS (SELECT df::float8 AS n FROM {s} WHERE term = ''),"
        " weighted AS (SELECT quote_literal(terms.word)::tsquery AS tq,"
        "  ln(1 + (total.n - d.df + 0.5) / (d.df + 0.5)) AS idf"
        "  FROM terms JOIN {s} d ON d.term = terms.word CROSS JOIN total WHERE d.df > 0),"
        " top AS (SELECT c.id, sum(w.idf) AS s FROM {t} c JOIN weighted w ON c.tsv @@ w.tq"
        "  WHERE {w} GROUP BY c.id ORDER BY s DESC, c.id LIMIT %s)"
        " SELECT c.id, {cols}"
        "  top.s + ts_rank(c.tsv, (SELECT string_agg(tq::text, ' | ')::tsquery FROM weighted), 1)"
        "  AS score"
        " FROM top JOIN {t} c USING (id) ORDER BY score DESC, c.id LIMIT %s"
    ).format(
        t=chunk_table(collection),
        s=terms_table(collection),
        w=where,
        cols=_text_columns(text_too),
    )
    cursor = await conn.execute(query, [text, *params, 2 * limit, limit])
    return await cursor.fetchall()


def _text_columns(wanted: bool) -> sql.Composable:
    return sql.SQL("c.source, c.title, c.position, c.content," if wanted else "c.source,")


async def _rows(
    conn: psycopg.AsyncConnection[dict[str, Any]], collection: str, ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The chunks with these ids, by id."""
    if not ids:
        return {}
    cursor = await conn.execute(
        sql.SQL(
            "SELECT c.id, c.source, c.title, c.position, c.content FROM {t} c WHERE c.id = ANY(%s)"
        ).format(t=chunk_table(collection)),
        (ids,),
    )
    return {r["id"]: r for r in await cursor.fetchall()}


async def mentions(
    conn: psycopg.AsyncConnection[dict[str, Any]], collection: str, text: str
) -> bool:
    """Whether any chunk shares a word (an English stem, stop words aside) with `text`."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE tsv @@ (SELECT"
            " string_agg(quote_literal(word), ' | ')::tsquery"
            " FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS word)) AS hit"
        ).format(t=chunk_table(collection)),
        (text,),
    )
    row = await cursor.fetchone()
    return bool(row and row["hit"])


def _filter(source: str | None) -> tuple[sql.Composable, list[Any]]:
    """Return the WHERE condition (on chunks aliased `c`) keeping `source` and what is under it."""
    if source is None:
        return sql.SQL("TRUE"), []
    return (
        sql.SQL("(c.source = %s OR starts_with(c.source, %s) OR starts_with(c.source, %s))"),
        [source, source.rstrip("/") + "/", source + "#"],
    )


async def _ready(vector: Sequence[float] | Awaitable[Sequence[float]]) -> Sequence[float]:
    return await vector if isinstance(vector, Awaitable) else vector


def _hit(row: dict[str, Any]) -> Hit:
    return Hit(
        chunk_id=row["id"],
        source=row["source"],
        title=row["title"],
        position=row["position"],
        content=row["content"],
        score=float(row["score"]),
    )
