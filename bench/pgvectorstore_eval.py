"""Compare `langchain_postgres.PGVectorStore` with our own SQL on SciFact: quality and latency.

The same chunks and the same embeddings: the rows of a collection that `bench.retrieval_eval`
ingested are copied, vectors and all, into a PGVectorStore table (with its `tsv` column and
GIN index for its hybrid search), so only the search differs. For each query of the split it
ranks 200 chunks (as `bench.retrieval_eval` does, for Recall@100) with PGVectorStore's dense
search, its hybrid search (dense + `ts_rank_cd` over `plainto_tsquery`, fused by its
reciprocal rank fusion), and ours (`retrievers.service.search`, hybrid), and times a
10-chunk search of each.

Run from the repository root, after `python -m bench.retrieval_eval` has ingested SciFact:

    python -m bench.pgvectorstore_eval [--split test] [--collection scifact] [--json]
                                       [--data-dir DIR] [--database-url URL]
"""

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import psycopg

from app.errors import AgentGraphError
from app.pg import resolve_database_url
from bench.common import (
    add_database_options,
    check_database_options,
    quantile,
    settings_for,
    version,
)
from bench.retrieval_eval import DEFAULT_DATASET, DEPTH, doc_ids, load_queries
from retrievers.interfaces import EmbedderEmbeddings
from retrievers.metrics import evaluate
from retrievers.schema import chunk_table
from retrievers.service import open_collection, search

logger = logging.getLogger("bench.pgvectorstore_eval")

CHUNK_DEPTH = 2 * DEPTH
"""Chunks ranked per query, as `bench.retrieval_eval` ranks them."""


def sqlalchemy_url(url: str) -> str:
    """The psycopg-driver SQLAlchemy URL of a libpq URL or conninfo."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = info.pop("host", "")
    user = info.pop("user", "postgres")
    dbname = info.pop("dbname", "postgres")
    port = info.pop("port", None)
    password = info.pop("password", None)
    auth = f"{user}:{password}@" if password else f"{user}@"
    if str(host).startswith("/"):  # a Unix socket directory
        return f"postgresql+psycopg://{auth}/{dbname}?host={host}"
    return f"postgresql+psycopg://{auth}{host}{':' + str(port) if port else ''}/{dbname}"


async def copy_rows(url: str, collection: str) -> list[dict[str, Any]]:
    """Read the collection's chunks: id, source, content, embedding."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            psycopg.sql.SQL(
                "SELECT id, source, content, embedding::text AS embedding FROM {t}"
            ).format(t=chunk_table(collection))
        )
        rows = await cursor.fetchall()
    return [
        {"id": r[0], "source": r[1], "content": r[2], "embedding": json.loads(r[3])} for r in rows
    ]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Copy the collection into PGVectorStore, rank every query three ways, score them."""
    from langchain_postgres import Column, PGEngine, PGVectorStore
    from langchain_postgres.v2.hybrid_search_config import (
        HybridSearchConfig,
        reciprocal_rank_fusion,
    )

    settings = settings_for(args)
    url = args.database_url or resolve_database_url(settings)
    queries, qrels = load_queries(args.dataset.resolve(), args.split)
    table = f"lc_pgvs_{args.collection}"
    engine = PGEngine.from_connection_string(sqlalchemy_url(url))
    hybrid = HybridSearchConfig(
        tsv_column="content_tsv",
        fusion_function=reciprocal_rank_fusion,
        fusion_function_parameters={"rrf_k": 60, "fetch_top_k": CHUNK_DEPTH},
        primary_top_k=CHUNK_DEPTH,
        secondary_top_k=CHUNK_DEPTH,
    )
    figures: dict[str, Any] = {
        "split": args.split,
        "queries": len(queries),
        "collection": args.collection,
        "langchain_postgres": version("langchain-postgres"),
    }
    async with open_collection(settings, args.collection, url=url) as (store, embedder):
        embeddings = EmbedderEmbeddings(embedder)
        await engine.ainit_vectorstore_table(
            table,
            embedder.dim,
            id_column=Column("langchain_id", "TEXT"),
            overwrite_existing=True,
            hybrid_search_config=hybrid,
        )
        vs = await PGVectorStore.create(
            engine, embeddings, table, hybrid_search_config=hybrid, k=CHUNK_DEPTH
        )
        rows = await copy_rows(url, args.collection)
        logger.info("copying %d chunks into %s", len(rows), table)
        started = time.perf_counter()
        for i in range(0, len(rows), 500):
            batch = rows[i : i + 500]
            await vs.aadd_embeddings(
                [r["content"] for r in batch],
                [r["embedding"] for r in batch],
                [{"source": r["source"]} for r in batch],
                [r["id"] for r in batch],
            )
        await vs.aapply_hybrid_search_index()
        figures["copy_seconds"] = round(time.perf_counter() - started, 1)
        figures["chunks"] = len(rows)

        async def pgvs_dense(text: str, k: int) -> list[str]:
            vector = await asyncio.to_thread(embedder.embed_query, text)
            docs = await vs.asimilarity_search_by_vector(vector, k=k)
            return [d.metadata["source"] for d in docs]

        async def pgvs_hybrid(text: str, k: int) -> list[str]:
            config = HybridSearchConfig(
                tsv_column="content_tsv",
                fusion_function=reciprocal_rank_fusion,
                fusion_function_parameters={"rrf_k": 60, "fetch_top_k": k},
                primary_top_k=max(k, 50),
                secondary_top_k=max(k, 50),
            )
            docs = await vs.asimilarity_search(text, k=k, hybrid_search_config=config)
            return [d.metadata["source"] for d in docs]

        async def ours(text: str, k: int) -> list[str]:
            hits = await search(store, embedder, text, k=k, mode="hybrid", candidates=k)
            return [h.source for h in hits]

        ways = {"pgvectorstore_dense": pgvs_dense, "pgvectorstore_hybrid": pgvs_hybrid,
                "ours_hybrid": ours}  # fmt: skip
        for text in list(queries.values())[:5]:  # warm-up
            for way in ways.values():
                await way(text, 10)
        results: dict[str, Any] = {}
        for name, way in ways.items():
            run = {
                qid: doc_ids(await way(text, CHUNK_DEPTH), DEPTH) for qid, text in queries.items()
            }
            metrics = evaluate(run, qrels)
            latencies = []
            for text in queries.values():
                t0 = time.perf_counter()
                await way(text, 10)
                latencies.append((time.perf_counter() - t0) * 1000)
            results[name] = {
                **{m: round(v, 4) for m, v in metrics.items()},
                "k10_latency_p50_ms": round(statistics.median(latencies), 2),
                "k10_latency_p95_ms": round(quantile(latencies, 95), 2),
            }
            logger.info("%s: %s", name, results[name])
        figures["results"] = results
        await engine.adrop_table(table)
    await engine.close()
    return figures


def render(f: dict[str, Any]) -> str:
    """The figures as a table."""
    lines = [
        f"{f['collection']}, {f['split']} split, {f['queries']} queries, {f['chunks']} chunks",
        f"{'search':<24}{'nDCG@10':>9}{'R@100':>8}{'k10 p50':>9}{'k10 p95':>9}",
    ]
    for name, r in f["results"].items():
        lines.append(
            f"{name:<24}{r['ndcg@10']:>9.4f}{r['recall@100']:>8.4f}"
            f"{r['k10_latency_p50_ms']:>9.1f}{r['k10_latency_p95_ms']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pgvectorstore_eval",
        description="langchain_postgres.PGVectorStore against our SQL, on the same chunks.",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR folder")
    parser.add_argument("--split", default="test", help="qrels split")
    parser.add_argument("--collection", default="scifact", help="the ingested collection")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_database_options(parser)
    args = parser.parse_args(argv)
    check_database_options(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        figures = asyncio.run(measure(args))
    except AgentGraphError as exc:
        logger.error("%s (ingest it first: python -m bench.retrieval_eval)", exc)
        return 1
    print(json.dumps(figures) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
