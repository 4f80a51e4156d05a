"""The document store: one chunk table per collection on Postgres with pgvector.

Each collection's table holds the chunk text, its embedding (`vector(dim)`, HNSW index, cosine)
and a generated `tsvector` (GIN index). `rag_collections` records the embedding model and
dimension a collection was built with; `rag_sources` records each source's content hash, which
decides whether a re-ingest has anything to do.
"""

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.errors import DatabaseError, RetrievalError
from app.pg import redact
from retrievers.fusion import RRF_K, rrf

logger = logging.getLogger(__name__)

SearchMode = Literal["dense", "fulltext", "hybrid"]
DEFAULT_COLLECTION = "default"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Any fixed 64-bit number: serialises DDL of the store across processes sharing one database.
_DDL_LOCK_KEY = 5_021_993_417_660_113_027

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS rag_collections (
    name text PRIMARY KEY,
    embedding_model text NOT NULL,
    dim integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rag_sources (
    collection text NOT NULL REFERENCES rag_collections(name) ON DELETE CASCADE,
    source text NOT NULL,
    content_hash text NOT NULL,
    title text NOT NULL,
    chunks integer NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, source)
);
"""


@dataclass(frozen=True)
class Chunk:
    """A piece of a source, ready to store."""

    chunk_id: str
    source: str
    title: str
    position: int
    content: str


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk and its score in the mode that found it."""

    chunk_id: str
    source: str
    title: str
    position: int
    content: str
    score: float


def validate_collection(name: str) -> str:
    """Return a collection name that is safe as part of a table name.

    Raises:
        RetrievalError: the name is not 1-40 lowercase letters, digits or underscores.
    """
    if not _NAME.match(name):
        raise RetrievalError(
            f"bad collection name {name!r}: use 1-40 lowercase letters, digits and underscores, "
            "starting with a letter"
        )
    return name


def _vector(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


class Store:
    """One collection on an open connection."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]], collection: str) -> None:
        self.conn = conn
        self.collection = collection
        self.table = sql.Identifier(f"rag_chunks_{collection}")

    async def _check(self, *, embedding_model: str, dim: int) -> None:
        """Check that the collection exists and fits the embedding model, changing nothing."""
        try:
            cursor = await self.conn.execute(
                "SELECT embedding_model, dim FROM rag_collections WHERE name = %s",
                (self.collection,),
            )
            row = await cursor.fetchone()
        except psycopg.errors.UndefinedTable:
            row = None  # nothing was ever ingested into this database
        self._verify(row, embedding_model=embedding_model, dim=dim)

    def _verify(self, row: dict[str, Any] | None, *, embedding_model: str, dim: int) -> None:
        if row is None:
            raise RetrievalError(
                f"no collection {self.collection!r}: ingest documents into it first "
                f"('agentgraph ingest PATH --collection {self.collection}')"
            )
        if row["dim"] != dim:
            raise RetrievalError(
                f"collection {self.collection!r} holds {row['dim']}-dimensional embeddings "
                f"from {row['embedding_model']!r}; the embedding model {embedding_model!r} "
                f"makes {dim}-dimensional ones. Use another collection, or set "
                f"AGENTGRAPH_EMBEDDINGS to the model it was built with. Nothing was changed."
            )

    async def _setup(self, *, embedding_model: str, dim: int) -> None:
        """Create the store's tables and the collection if they are missing."""
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
            await self.conn.execute(_SCHEMA)
            cursor = await self.conn.execute(
                "SELECT embedding_model, dim FROM rag_collections WHERE name = %s",
                (self.collection,),
            )
            row = await cursor.fetchone()
            if row is not None:
                self._verify(row, embedding_model=embedding_model, dim=dim)
            else:
                await self.conn.execute(
                    "INSERT INTO rag_collections (name, embedding_model, dim) VALUES (%s, %s, %s)",
                    (self.collection, embedding_model, dim),
                )
                await self.conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {t} ("
                        " id text PRIMARY KEY,"
                        " source text NOT NULL,"
                        " title text NOT NULL,"
                        " position integer NOT NULL,"
                        " content text NOT NULL,"
                        " embedding vector({dim}) NOT NULL,"
                        " tsv tsvector GENERATED ALWAYS AS"
                        "  (to_tsvector('english', title || ' ' || content)) STORED)"
                    ).format(t=self.table, dim=sql.Literal(dim))
                )
                await self.conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {i} ON {t}"
                        " USING hnsw (embedding vector_cosine_ops)"
                    ).format(i=sql.Identifier(f"rag_{self.collection}_hnsw"), t=self.table)
                )
                await self.conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
                        i=sql.Identifier(f"rag_{self.collection}_tsv"), t=self.table
                    )
                )
                await self.conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (source)").format(
                        i=sql.Identifier(f"rag_{self.collection}_source"), t=self.table
                    )
                )

    async def source_hashes(self) -> dict[str, str]:
        """Return every stored source and its content hash."""
        cursor = await self.conn.execute(
            "SELECT source, content_hash FROM rag_sources WHERE collection = %s",
            (self.collection,),
        )
        return {row["source"]: row["content_hash"] for row in await cursor.fetchall()}

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
        async with self.conn.transaction():
            await self.conn.execute(
                sql.SQL("DELETE FROM {t} WHERE source = %s").format(t=self.table), (source,)
            )
            async with self.conn.cursor() as cursor:
                await cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {t} (id, source, title, position, content, embedding)"
                        " VALUES (%s, %s, %s, %s, %s, %s::vector)"
                    ).format(t=self.table),
                    [
                        (c.chunk_id, c.source, c.title, c.position, c.content, _vector(v))
                        for c, v in zip(chunks, vectors, strict=True)
                    ],
                )
            await self.conn.execute(
                "INSERT INTO rag_sources (collection, source, content_hash, title, chunks)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (collection, source) DO UPDATE SET"
                " content_hash = EXCLUDED.content_hash, title = EXCLUDED.title,"
                " chunks = EXCLUDED.chunks, ingested_at = now()",
                (self.collection, source, content_hash, title, len(chunks)),
            )

    async def delete_sources(self, prefix: str) -> list[str]:
        """Delete the sources equal to `prefix` or under it (a directory or a corpus file)."""
        async with self.conn.transaction():
            cursor = await self.conn.execute(
                "DELETE FROM rag_sources WHERE collection = %s AND (source = %s"
                " OR starts_with(source, %s) OR starts_with(source, %s)) RETURNING source",
                (self.collection, prefix, prefix.rstrip("/") + "/", prefix + "#"),
            )
            gone = [row["source"] for row in await cursor.fetchall()]
            if gone:
                await self.conn.execute(
                    sql.SQL("DELETE FROM {t} WHERE source = ANY(%s)").format(t=self.table),
                    (gone,),
                )
        return sorted(gone)

    async def count(self) -> tuple[int, int]:
        """Return the number of sources and of chunks in the collection."""
        cursor = await self.conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM rag_sources WHERE collection = %s) AS sources,"
                " (SELECT count(*) FROM {t}) AS chunks"
            ).format(t=self.table),
            (self.collection,),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row["sources"]), int(row["chunks"])

    def _filter(self, source: str | None) -> tuple[sql.Composable, list[Any]]:
        if source is None:
            return sql.SQL("TRUE"), []
        return (
            sql.SQL("(c.source = %s OR starts_with(c.source, %s) OR starts_with(c.source, %s))"),
            [source, source.rstrip("/") + "/", source + "#"],
        )

    async def dense(
        self, vector: Sequence[float], *, limit: int, source: str | None = None
    ) -> list[Hit]:
        """Return the nearest chunks by cosine similarity (HNSW)."""
        where, params = self._filter(source)
        literal = _vector(vector)
        query = sql.SQL(
            "SELECT c.id, c.source, c.title, c.position, c.content,"
            " 1 - (c.embedding <=> %s::vector) AS score FROM {t} c WHERE {w}"
            " ORDER BY c.embedding <=> %s::vector LIMIT %s"
        ).format(t=self.table, w=where)
        async with self.conn.transaction():
            # ef_search bounds how many candidates HNSW can return; iterative scans keep a
            # filtered search from coming back short.
            await self.conn.execute(
                sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(40, limit)))
            )
            if source is not None:
                await self.conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor = await self.conn.execute(query, [literal, *params, literal, limit])
            rows = await cursor.fetchall()
        hits = [_hit(r) for r in rows]
        return sorted(hits, key=lambda h: -h.score)

    async def mentions(self, text: str) -> bool:
        """Whether any chunk shares a word (an English stem, stop words aside) with `text`."""
        cursor = await self.conn.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE tsv @@ (SELECT"
                " string_agg(quote_literal(word), ' | ')::tsquery"
                " FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS word)) AS hit"
            ).format(t=self.table),
            (text,),
        )
        row = await cursor.fetchone()
        return bool(row and row["hit"])

    async def fulltext(self, text: str, *, limit: int, source: str | None = None) -> list[Hit]:
        """Return chunks matching any query term, scored by the summed IDF of matched terms.

        Postgres' own `ts_rank` has no inverse document frequency; weighting each matched
        lexeme by its IDF is what makes full-text ranking competitive with BM25.
        """
        where, params = self._filter(source)
        # Rank ids by summed IDF first (narrow rows), then fetch and tie-break only the best:
        # ts_rank over every matching row costs more than the whole rest of the query.
        query = sql.SQL(
            "WITH terms AS (SELECT DISTINCT quote_literal(word)::tsquery AS tq"
            "  FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS word),"
            " total AS (SELECT count(*)::float8 AS n FROM {t}),"
            " weighted AS (SELECT terms.tq, ln(1 + (total.n - d.df + 0.5) / (d.df + 0.5)) AS idf"
            "  FROM terms, total,"
            "  LATERAL (SELECT count(*)::float8 AS df FROM {t} x WHERE x.tsv @@ terms.tq) d),"
            " top AS (SELECT c.id, sum(w.idf) AS s FROM {t} c JOIN weighted w ON c.tsv @@ w.tq"
            "  WHERE {w} GROUP BY c.id ORDER BY s DESC, c.id LIMIT %s)"
            " SELECT c.id, c.source, c.title, c.position, c.content,"
            "  top.s + ts_rank(c.tsv, (SELECT string_agg(tq::text, ' | ')::tsquery FROM terms), 1)"
            "  AS score"
            " FROM top JOIN {t} c USING (id) ORDER BY score DESC, c.id LIMIT %s"
        ).format(t=self.table, w=where)
        cursor = await self.conn.execute(query, [text, *params, 2 * limit, limit])
        return [_hit(r) for r in await cursor.fetchall()]

    async def search(
        self,
        text: str,
        vector: Sequence[float] | Awaitable[Sequence[float]] | None,
        *,
        k: int,
        mode: SearchMode = "hybrid",
        source: str | None = None,
        candidates: int | None = None,
        rrf_k: int = RRF_K,
    ) -> list[Hit]:
        """Return the best `k` chunks; hybrid fuses dense and full-text candidates by RRF.

        Args:
            text: The query text (full-text and hybrid).
            vector: The query embedding (dense and hybrid), or a task computing it: hybrid
                runs its full-text half first, while the task runs.
            k: How many chunks to return.
            mode: dense, fulltext or hybrid.
            source: Only chunks of this source, or of sources under it.
            candidates: How many of each list hybrid fuses (default: max(k, 50)).
            rrf_k: The RRF constant.
        """
        if mode == "fulltext":
            return await self.fulltext(text, limit=k, source=source)
        if vector is None:
            raise RetrievalError(f"{mode} search needs a query embedding")
        if mode == "dense":
            return await self.dense(await _ready(vector), limit=k, source=source)
        depth = max(k, candidates or 50)
        full = await self.fulltext(text, limit=depth, source=source)
        dense = await self.dense(await _ready(vector), limit=depth, source=source)
        by_id = {h.chunk_id: h for h in [*full, *dense]}
        fused = rrf([[h.chunk_id for h in dense], [h.chunk_id for h in full]], k=rrf_k)
        return [_rescore(by_id[i], score) for i, score in fused[:k]]


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


def _rescore(hit: Hit, score: float) -> Hit:
    return Hit(hit.chunk_id, hit.source, hit.title, hit.position, hit.content, score)


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

    Opening without `create` only reads: it changes nothing in the database. With `pool`
    (an open pool on `url`, autocommit with dict rows) the store borrows one of its
    connections instead of opening its own.

    Raises:
        RetrievalError: bad name, unknown collection, or an embedding dimension that differs
            from the one the collection was built with.
        DatabaseError: Postgres cannot be reached or has no pgvector.
    """
    validate_collection(collection)
    async with _connection(url, pool) as conn:
        store = Store(conn, collection)
        try:
            if create:
                await store._setup(embedding_model=embedding_model, dim=dim)
            else:
                await store._check(embedding_model=embedding_model, dim=dim)
        except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
            raise DatabaseError(
                f"Postgres at {redact(url)} has no pgvector extension ({exc}); use the "
                "embedded Postgres or a server with pgvector installed"
            ) from exc
        yield store


@asynccontextmanager
async def _connection(
    url: str, pool: AsyncConnectionPool[Any] | None
) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """An autocommit connection with dict rows: from `pool` when given, else a new one."""
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
