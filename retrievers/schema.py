"""The store's schema: its DDL, set-up under an advisory lock, and the collection check.

Each collection's table holds the chunk text, its embedding (`vector(dim)`, HNSW index, cosine)
and a generated `tsvector` (GIN index). `rag_collections` records the embedding model and
dimension a collection was built with; `rag_sources` records each source's content hash, which
decides whether a re-ingest has anything to do.

Each collection also keeps what its full-text search (BM25) reads, so that a search reads a
few indexed rows per query term instead of every matching chunk's `tsvector`:
- its term statistics (`rag_terms_<name>`): for every lexeme, the number of chunks holding it;
  under the empty term the number of chunks, and under a space (which no lexeme holds) the
  number of distinct lexemes of all chunks together, whence the average chunk length;
- its postings (`rag_postings_<name>`): for every lexeme of every chunk, how often the chunk
  holds it and the chunk's length (its distinct lexemes), keyed by lexeme.
The writes keep both current in the transaction that changes the chunks
(`retrievers.sources`). A collection made before either existed gets it, filled from its
chunks, when it is opened.
"""

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from app.errors import RetrievalError

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


def chunk_table(collection: str) -> sql.Identifier:
    """Return the name of the table holding a collection's chunks."""
    return sql.Identifier(f"rag_chunks_{collection}")


def terms_table(collection: str) -> sql.Identifier:
    """Return the name of the table holding a collection's term statistics."""
    return sql.Identifier(f"rag_terms_{collection}")


def postings_table(collection: str) -> sql.Identifier:
    """Return the name of the table holding a collection's postings."""
    return sql.Identifier(f"rag_postings_{collection}")


_POSTINGS_DDL = (
    "CREATE TABLE IF NOT EXISTS {p} (term text NOT NULL, chunk text NOT NULL,"
    " tf integer NOT NULL, dl integer NOT NULL, PRIMARY KEY (term, chunk) INCLUDE (tf, dl))"
)
ADD_POSTINGS = (
    "INSERT INTO {p} (term, chunk, tf, dl)"
    " SELECT u.lexeme, c.id, coalesce(cardinality(u.positions), 1), length(c.tsv)"
    " FROM {t} c, unnest(c.tsv) AS u WHERE {w}"
)
"""The postings of the chunks that `{w}` (a condition on chunks `c`) keeps."""
COUNT_TERMS = (
    "INSERT INTO {s} (term, df)"
    " SELECT term, %s * n FROM ("
    "  SELECT word AS term, count(*) AS n FROM {t} c, unnest(tsvector_to_array(c.tsv)) AS word"
    "  WHERE {w} GROUP BY word"
    "  UNION ALL SELECT '', count(*) FROM {t} c WHERE {w}"
    "  UNION ALL SELECT ' ', sum(length(c.tsv)) FROM {t} c WHERE {w}) AS counted"
    " WHERE n > 0 ORDER BY term"
    " ON CONFLICT (term) DO UPDATE SET df = {s}.df + EXCLUDED.df"
)
"""Add (sign 1) or take away (sign -1) the term statistics of the chunks that `{w}` keeps:
their terms, their number under the empty term and their lexemes under a space. In term
order, so that concurrent writers lock rows in one order."""


async def _exists(conn: psycopg.AsyncConnection[dict[str, Any]], table: str) -> bool:
    cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (table,))
    row = await cursor.fetchone()
    return bool(row and row["ok"])


async def ensure_terms(conn: psycopg.AsyncConnection[dict[str, Any]], collection: str) -> None:
    """Create and fill what the collection's full-text search reads and it lacks, made by an
    earlier release: its postings, its term statistics, or their lexeme count (one process at
    a time; the others wait, then find the work done)."""
    chunks, terms = chunk_table(collection), terms_table(collection)
    await _ensure_postings(conn, collection)
    if await _exists(conn, f"rag_terms_{collection}"):
        await _ensure_lexeme_count(conn, chunks, terms)
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {s} (term text PRIMARY KEY, df integer NOT NULL)"
            ).format(s=terms)
        )
        cursor = await conn.execute(sql.SQL("SELECT count(*) AS n FROM {s}").format(s=terms))
        filled = await cursor.fetchone()
        if filled and filled["n"]:
            return  # another process filled it while this one waited for the lock
        await conn.execute(sql.SQL(COUNT_TERMS).format(s=terms, t=chunks, w=sql.SQL("TRUE")), (1,))


async def _ensure_postings(conn: psycopg.AsyncConnection[dict[str, Any]], collection: str) -> None:
    """Create and fill the collection's postings if it has none yet."""
    if await _exists(conn, f"rag_postings_{collection}"):
        return
    chunks, postings = chunk_table(collection), postings_table(collection)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
        if await _exists(conn, f"rag_postings_{collection}"):
            return  # another process made them while this one waited for the lock
        await conn.execute(sql.SQL(_POSTINGS_DDL).format(p=postings))
        # Writers are held off until the postings are filled and visible with the table.
        await conn.execute(sql.SQL("LOCK TABLE {t} IN SHARE MODE").format(t=chunks))
        await conn.execute(sql.SQL(ADD_POSTINGS).format(p=postings, t=chunks, w=sql.SQL("TRUE")))


async def _ensure_lexeme_count(
    conn: psycopg.AsyncConnection[dict[str, Any]], chunks: sql.Identifier, terms: sql.Identifier
) -> None:
    """Add the lexeme count to term statistics kept before it was."""
    missing = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {s} WHERE term = '')"
        " AND NOT EXISTS (SELECT 1 FROM {s} WHERE term = ' ') AS missing"
    ).format(s=terms)
    cursor = await conn.execute(missing)
    row = await cursor.fetchone()
    if not (row and row["missing"]):
        return
    async with conn.transaction():
        # Writers change the statistics in the transaction that changes the chunks: with
        # them held off, the count over the chunks is the true one, even where a writer
        # added its own lexemes to a count that was missing.
        await conn.execute(sql.SQL("LOCK TABLE {s} IN SHARE ROW EXCLUSIVE MODE").format(s=terms))
        await conn.execute(
            sql.SQL(
                "INSERT INTO {s} (term, df) SELECT ' ', sum(length(tsv)) FROM {t}"
                " HAVING count(*) > 0 ON CONFLICT (term) DO UPDATE SET df = EXCLUDED.df"
            ).format(s=terms, t=chunks)
        )


def vector_literal(values: Sequence[float]) -> str:
    """Write an embedding in pgvector's text form, to be cast with `::vector`."""
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


async def check_collection(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    *,
    embedding_model: str,
    dim: int,
) -> None:
    """Check that the collection exists and fits the embedding model, changing nothing.

    Raises:
        RetrievalError: no such collection, or its embeddings have another dimension.
    """
    try:
        cursor = await conn.execute(
            "SELECT embedding_model, dim FROM rag_collections WHERE name = %s",
            (collection,),
        )
        row = await cursor.fetchone()
    except psycopg.errors.UndefinedTable:
        row = None  # nothing was ever ingested into this database
    _verify(collection, row, embedding_model=embedding_model, dim=dim)


async def create_collection(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    *,
    embedding_model: str,
    dim: int,
) -> None:
    """Create the store's tables and the collection if they are missing.

    Raises:
        RetrievalError: the collection exists with embeddings of another dimension.
    """
    table = chunk_table(collection)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
        await conn.execute(_SCHEMA)
        cursor = await conn.execute(
            "SELECT embedding_model, dim FROM rag_collections WHERE name = %s",
            (collection,),
        )
        row = await cursor.fetchone()
        if row is not None:
            _verify(collection, row, embedding_model=embedding_model, dim=dim)
        else:
            await conn.execute(
                "INSERT INTO rag_collections (name, embedding_model, dim) VALUES (%s, %s, %s)",
                (collection, embedding_model, dim),
            )
            await conn.execute(
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
                ).format(t=table, dim=sql.Literal(dim))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
                ).format(i=sql.Identifier(f"rag_{collection}_hnsw"), t=table)
            )
            await conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
                    i=sql.Identifier(f"rag_{collection}_tsv"), t=table
                )
            )
            await conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (source)").format(
                    i=sql.Identifier(f"rag_{collection}_source"), t=table
                )
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {s} (term text PRIMARY KEY, df integer NOT NULL)"
                ).format(s=terms_table(collection))
            )
            await conn.execute(sql.SQL(_POSTINGS_DDL).format(p=postings_table(collection)))


def _verify(collection: str, row: dict[str, Any] | None, *, embedding_model: str, dim: int) -> None:
    if row is None:
        raise RetrievalError(
            f"no collection {collection!r}: ingest documents into it first "
            f"('agentgraph ingest PATH --collection {collection}')"
        )
    if row["dim"] != dim:
        raise RetrievalError(
            f"collection {collection!r} holds {row['dim']}-dimensional embeddings "
            f"from {row['embedding_model']!r}; the embedding model {embedding_model!r} "
            f"makes {dim}-dimensional ones. Use another collection, or set "
            f"AGENTGRAPH_EMBEDDINGS to the model it was built with. Nothing was changed."
        )
