"""The store's schema: its DDL, set-up under an advisory lock, and the collection check.

Each collection's table holds the chunk text, its embedding (`vector(dim)`, HNSW index, cosine)
and a generated `tsvector` (GIN index). `rag_collections` records the embedding model and
dimension a collection was built with; `rag_sources` records each source's content hash, which
decides whether a re-ingest has anything to do.

Each collection also keeps its term statistics (`rag_terms_<name>`): for every lexeme of its
`tsvector`s, the number of chunks holding it, and under the empty term the number of chunks.
The writes keep them current in the transaction that changes the chunks
(`retrievers.sources`), so a full-text search reads each query term's document frequency
from one indexed row instead of counting the chunks that hold it at every query. A
collection made before the table existed gets it, filled from its chunks, when it is opened.
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


async def ensure_terms(conn: psycopg.AsyncConnection[dict[str, Any]], collection: str) -> None:
    """Create and fill the collection's term statistics if it has none yet (one process at a
    time; the others wait, then find the table)."""
    cursor = await conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AS ok", (f"rag_terms_{collection}",)
    )
    row = await cursor.fetchone()
    if row and row["ok"]:
        return
    chunks, terms = chunk_table(collection), terms_table(collection)
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
        await conn.execute(
            sql.SQL(
                "INSERT INTO {s} (term, df) SELECT word, count(*) FROM {t},"
                " unnest(tsvector_to_array(tsv)) AS word GROUP BY word"
                " UNION ALL SELECT '', count(*) FROM {t}"
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
