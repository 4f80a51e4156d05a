"""Searching a collection: dense (HNSW), full text ranked by BM25, and hybrid, which fuses
the two (`retrievers.fusion`); plus `mentions`, the cheap check for any shared word.
"""

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from app.errors import RetrievalError
from retrievers.fusion import HYBRID_CANDIDATES, document_fusion, rrf
from retrievers.schema import chunk_table, postings_table, terms_table, vector_literal

SearchMode = Literal["dense", "fulltext", "hybrid"]

BM25_K1 = 1.2
"""BM25's term-frequency saturation: the usual default (Lucene's, Elasticsearch's). A sweep of
k1 from 0.6 to 2.0 on three collections found nothing better across them (`bench/README.md`)."""
BM25_B = 0.75
"""BM25's length normalisation: the usual default; b from 0.3 to 0.9 was swept with k1."""


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
    (`retrievers.fusion.document_fusion`, or reciprocal rank fusion of the chunks when `rrf_k`
    is given).

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
        rrf_k: Fuse by RRF with this constant instead of `document_fusion`.

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
    if rrf_k is None:
        lists = [[(r["id"], r["source"], float(r["score"])) for r in rows] for rows in (near, full)]
        fused = document_fusion(lists)[:k]
    else:
        fused = rrf([[r["id"] for r in near], [r["id"] for r in full]], k=rrf_k)[:k]
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
    k1: float = BM25_K1,
    b: float = BM25_B,
) -> list[Hit]:
    """Return chunks matching any query term, ranked by BM25 (Okapi; `k1` and `b` are for
    benchmarks to sweep, searches keep the defaults).

    Postgres' own `ts_rank` has no inverse document frequency. BM25 weighs each matched
    lexeme by its IDF and by how often the query and the chunk hold it, against the chunk's
    length: a long query or a long chunk no longer wins by matching many words once.
    """
    rows = await _fulltext_rows(
        conn, collection, text, limit=limit, source=source, text_too=True, k1=k1, b=b
    )
    return [_hit(r) for r in rows]


async def _fulltext_rows(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    text: str,
    *,
    limit: int,
    source: str | None,
    text_too: bool,
    k1: float = BM25_K1,
    b: float = BM25_B,
) -> list[dict[str, Any]]:
    # Each query term's document frequency, the number of chunks (under the empty term) and
    # of their lexemes (under a space) come from the collection's term statistics, each
    # chunk's frequency of the term and its length (distinct lexemes) from its postings
    # (`retrievers.schema`): indexed rows, no chunk read. Ids are ranked first (narrow
    # rows); the text is fetched for the best alone.
    where, params = _filter(source)
    only = sql.SQL("JOIN {t} c ON c.id = p.chunk WHERE {w}") if source else sql.SQL("")
    query = sql.SQL(
        "WITH terms AS (SELECT lexeme AS word, cardinality(positions) AS qtf"
        "  FROM unnest(to_tsvector('english', %s))),"
        " stats AS (SELECT max(df) FILTER (WHERE term = '')::float8 AS n,"
        "  max(df) FILTER (WHERE term = ' ')::float8 AS lexemes FROM {s} WHERE term IN ('', ' ')),"
        " weighted AS (SELECT terms.word,"
        "  terms.qtf * ln(1 + (stats.n - d.df + 0.5) / (d.df + 0.5)) AS idf,"
        "  stats.lexemes / stats.n AS avgdl"
        "  FROM terms JOIN {s} d ON d.term = terms.word CROSS JOIN stats WHERE d.df > 0),"
        " top AS (SELECT p.chunk AS id, sum(w.idf * p.tf * {k1p1} / (p.tf + {k1} * (1 - {b}"
        "   + {b} * p.dl / coalesce(w.avgdl, p.dl)))) AS s"
        "  FROM weighted w JOIN {p} p ON p.term = w.word {only}"
        "  GROUP BY p.chunk ORDER BY s DESC, p.chunk LIMIT %s)"
        " SELECT c.id, {cols} top.s AS score"
        " FROM top JOIN {t} c USING (id) ORDER BY score DESC, c.id"
    ).format(
        t=chunk_table(collection),
        s=terms_table(collection),
        p=postings_table(collection),
        only=only.format(t=chunk_table(collection), w=where),
        cols=_text_columns(text_too),
        k1=sql.Literal(float(k1)),
        k1p1=sql.Literal(float(k1) + 1),
        b=sql.Literal(float(b)),
    )
    cursor = await conn.execute(query, [text, *params, limit])
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
