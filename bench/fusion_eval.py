"""Compare ways of fusing the dense and full-text lists, on several collections at once.

For every query of each dataset's split, the two candidate lists (200 chunks each, with their
scores) are fetched once from the ingested collection, then each fusion is applied to the
same lists and scored at the document level (a document ranks where its first chunk does),
as `bench.retrieval_eval` scores them. The fusions:

- `dense`, `fulltext`: either list alone;
- `rrf-K`: reciprocal rank fusion of the chunk lists with constant K;
- `chunk-agree+rrf`: the fusion of the previous release: a convex combination of min-max
  scaled chunk scores, each list weighted by how much the other agrees with its top
  (`agreement_weights`), for the first 20 chunks, RRF (k = 10) after them;
- `doc-A`: `retrievers.fusion.document_fusion` with weight A on dense (`doc-0.5` is what
  hybrid search ships), `doc-0.5@N` the same over each list's first N chunks;
- `doc-agree`: the same with the agreement weights;
- `doc-z-A@N`: the same over N chunks of each list with z-scores instead of min-max: as a
  z-score is affine, this is min-max with each list weighted, query by query, by its spread
  (max − min) in its own standard deviations, so a list with a clear head counts more;
- `doc-rrf-K`: RRF over the lists' documents;
- `doc-max-A`: each list divided by its best score (scaled from 0, not from its last
  candidate), weight A on dense; `doc-bound-A`: the same with dense scaled from -1, the
  lowest a cosine can be (the "theoretical" lower bounds of Bruch et al., 2023);
- `dense+prf`: dense search again, the query's embedding moved towards the chunks of the
  fused first three documents (Rocchio pseudo-relevance feedback, beta 0.5); `doc-0.5+prf`
  that list fused with the full text, `doc-3+prf` the three lists fused with equal weights.

With `--bm25-grid`, the full-text list is also fetched for every BM25 k1 and b of a grid,
and each is scored alone and fused with dense (`doc-0.5`). With `--pseudo-queries title` (or
`first`), the queries are not the split's but 300 of the collection's own documents, each
queried by its title (or its text's first sentence) and relevant to it alone: the
per-collection calibration a fusion weight could be chosen by, at ingestion, without judged
queries.

Run after `bench.retrieval_eval` has ingested the datasets (one collection each):

    python -m bench.fusion_eval --split train \
        --dataset ../shared/datasets/scifact:scifact bench/data/cranfield:cranfield \
        bench/data/cisi:cisi [--bm25-grid] [--json]
"""

import argparse
import asyncio
import json
import logging
import random
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import psycopg
from psycopg import sql

from app.errors import AgentGraphError
from bench.common import add_database_options, check_database_options, settings_for
from bench.retrieval_eval import DEPTH, load_queries
from retrievers import search
from retrievers.fusion import Candidate, document_fusion, rrf
from retrievers.metrics import evaluate
from retrievers.schema import chunk_table
from retrievers.service import open_collection

logger = logging.getLogger("bench.fusion_eval")

CANDIDATES = 2 * DEPTH
Lists = dict[str, list[Candidate]]
"""The candidate lists of one query by name (`dense`, `fulltext`, `dense+prf`, and with the grid
`bm25 K1 B`): (chunk id, source, score), best first."""
Fusion = Callable[[Lists], list[str]]
"""A fusion: the lists to documents, best first."""
BM25_GRID = [(k1, b) for k1 in (0.6, 0.9, 1.2, 1.5, 2.0) for b in (0.3, 0.5, 0.75, 0.9)]
"""The (k1, b) pairs `--bm25-grid` sweeps."""
FEEDBACK_DOCUMENTS = 3
"""Documents of the fused list whose best chunks move the query embedding, for `dense+prf`."""
FEEDBACK_BETA = 0.5
"""How far they move it: the query's unit vector plus beta times their mean."""
PSEUDO_QUERIES = 300
"""Documents sampled for `--pseudo-queries`."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _doc(source: str) -> str:
    return source.rsplit("#", 1)[-1]


def agreement_weights(rankings: Sequence[Sequence[str]], *, top: int = 10) -> list[float]:
    """Weight each ranked list of documents by how many of its first `top` the other lists
    hold in their first 100 (at least 0.1); the weights sum to 1."""
    scores = []
    for i, ranking in enumerate(rankings):
        others = set().union(*(r[:100] for j, r in enumerate(rankings) if j != i))
        head = list(dict.fromkeys(ranking))[:top]
        scores.append(max(0.1, len(others.intersection(head)) / max(1, len(head))))
    return [s / sum(scores) for s in scores]


def _spread(items: Sequence[Candidate]) -> float:
    """A list's range of scores in its standard deviations (1 when they do not vary)."""
    scores = [s for *_, s in items]
    deviation = statistics.pstdev(scores) if len(scores) > 1 else 0.0
    return (max(scores) - min(scores)) / deviation if deviation else 1.0


def _minmax(items: Sequence[Candidate]) -> dict[str, float]:
    low, high = min(s for *_, s in items), max(s for *_, s in items)
    return {c: (s - low) / ((high - low) or 1.0) for c, _, s in items}


def fusions() -> dict[str, Fusion]:
    """Every fusion compared, by name."""

    def docs_of(fused: list[tuple[str, float]], lists: Lists) -> list[str]:
        source = {cid: src for items in lists.values() for cid, src, _ in items}
        return [_doc(source[cid]) for cid, _ in fused]

    def pair(lists: Lists) -> list[list[Candidate]]:
        return [lists["dense"], lists["fulltext"]]

    def rrf_chunks(k: int) -> Fusion:
        return lambda lists: docs_of(rrf([[c for c, _, _ in ls] for ls in pair(lists)], k=k), lists)

    def doc_convex(
        alpha: float, depth: int = 100, names: tuple[str, str] = ("dense", "fulltext")
    ) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            heads = [lists[name][:depth] for name in names]
            return docs_of(document_fusion(heads, weights=[alpha, 1 - alpha]), lists)

        return fuse

    def doc_z(alpha: float, depth: int = 200) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            heads = [ls[:depth] for ls in pair(lists)]
            spread = [_spread(ls) if ls else 1.0 for ls in heads]
            weights = [alpha * spread[0], (1 - alpha) * spread[1]]
            return docs_of(document_fusion(heads, weights=weights), lists)

        return fuse

    def doc_bounded(alpha: float, dense_low: float) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            heads = [ls[:100] for ls in pair(lists)]
            fused = document_fusion(heads, weights=[alpha, 1 - alpha], lows=[dense_low, 0.0])
            return docs_of(fused, lists)

        return fuse

    def doc_agree(lists: Lists) -> list[str]:
        heads = [ls[:100] for ls in pair(lists)]
        weights = agreement_weights([[_doc(s) for _, s, _ in ls] for ls in heads])
        return docs_of(document_fusion(heads, weights=weights), lists)

    def doc_rrf(k: int) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            docs = [list(dict.fromkeys(_doc(s) for _, s, _ in ls)) for ls in pair(lists)]
            return [d for d, _ in rrf(docs, k=k)]

        return fuse

    def three_with_prf(lists: Lists) -> list[str]:
        heads = [lists[name][:100] for name in ("dense", "fulltext", "dense+prf")]
        return docs_of(document_fusion(heads), lists)

    def chunk_agree_rrf(lists: Lists) -> list[str]:
        heads = [ls[:100] for ls in pair(lists)]
        weights = agreement_weights([[_doc(s) for _, s, _ in ls] for ls in heads])
        scaled = [_minmax(ls) if ls else {} for ls in heads]
        convex: dict[str, float] = {}
        for weight, scores in zip(weights, scaled, strict=True):
            for chunk, score in scores.items():
                convex[chunk] = convex.get(chunk, 0.0) + weight * score
        head = sorted(convex, key=lambda c: -convex[c])[:20]
        tail = [c for c, _ in rrf([[c for c, _, _ in ls] for ls in heads]) if c not in head]
        return docs_of([(c, 0.0) for c in head + tail], lists)

    table: dict[str, Fusion] = {
        "dense": lambda lists: [_doc(s) for _, s, _ in lists["dense"]],
        "fulltext": lambda lists: [_doc(s) for _, s, _ in lists["fulltext"]],
        "rrf-10": rrf_chunks(10),
        "rrf-60": rrf_chunks(60),
        "chunk-agree+rrf": chunk_agree_rrf,
    }
    for alpha in (0.3, 0.4, 0.5, 0.6, 0.7):
        table[f"doc-{alpha}"] = doc_convex(alpha)
    table["doc-0.5@50"] = doc_convex(0.5, 50)
    table["doc-0.5@200"] = doc_convex(0.5, 200)
    table["doc-z-0.5@100"] = doc_z(0.5, 100)
    table["doc-z-0.5@200"] = doc_z(0.5)
    table["doc-z-0.6@200"] = doc_z(0.6)
    table["doc-agree"] = doc_agree
    table["doc-rrf-60"] = doc_rrf(60)
    for alpha in (0.5, 0.6, 0.7):
        table[f"doc-max-{alpha}"] = doc_bounded(alpha, 0.0)
    for alpha in (0.8, 0.9):
        table[f"doc-bound-{alpha}"] = doc_bounded(alpha, -1.0)
    table["dense+prf"] = lambda lists: [_doc(s) for _, s, _ in lists["dense+prf"]]
    table["doc-0.5+prf"] = doc_convex(0.5, names=("dense+prf", "fulltext"))
    table["doc-3+prf"] = three_with_prf
    return table


async def candidate_lists(
    args: argparse.Namespace, dataset: Path, collection: str
) -> tuple[dict[str, Lists], dict[str, dict[str, int]]]:
    """Every candidate list of every query of the split, and the split's qrels."""
    settings = settings_for(args)
    if args.pseudo_queries:
        queries, qrels = pseudo_queries(dataset, args.pseudo_queries)
    else:
        queries, qrels = load_queries(dataset, args.split)
    lists: dict[str, Lists] = {}
    async with open_collection(settings, collection, url=args.database_url) as (store, embedder):
        for done, (qid, text) in enumerate(queries.items()):
            if done and done % 100 == 0:
                logger.info("%s: %d of %d queries", collection, done, len(queries))
            vector = await asyncio.to_thread(embedder.embed_query, text)
            dense = await store.dense(vector, limit=CANDIDATES)
            full = await store.fulltext(text, limit=CANDIDATES)
            found = lists[qid] = {
                "dense": [(h.chunk_id, h.source, h.score) for h in dense],
                "fulltext": [(h.chunk_id, h.source, h.score) for h in full],
            }
            moved = await _feedback_vector(store.conn, collection, vector, found)
            found["dense+prf"] = [
                (h.chunk_id, h.source, h.score) for h in await store.dense(moved, limit=CANDIDATES)
            ]
            if args.bm25_grid:
                for k1, b in BM25_GRID:
                    hits = await search.fulltext(
                        store.conn, collection, text, limit=CANDIDATES, k1=k1, b=b
                    )
                    found[f"bm25 {k1} {b}"] = [(h.chunk_id, h.source, h.score) for h in hits]
    return lists, qrels


def pseudo_queries(
    dataset: Path, kind: str, *, count: int = PSEUDO_QUERIES
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries made from the collection itself, for a per-collection calibration: a seeded
    sample of `count` documents, each queried by its title (`kind` "title") or by the first
    sentence of its text ("first"), its own document the one relevant answer."""
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as f:
        documents = [json.loads(line) for line in f]
    usable = [d for d in documents if d.get("title", "").strip() and d.get("text", "").strip()]
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for n, document in enumerate(random.Random(7).sample(usable, min(count, len(usable)))):
        text = document["text"].strip()
        query = document["title"].strip() if kind == "title" else _SENTENCE.split(text)[0]
        queries[f"p{n}"] = query
        qrels[f"p{n}"] = {document["_id"]: 1}
    return queries, qrels


async def _feedback_vector(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    collection: str,
    vector: Sequence[float],
    lists: Lists,
) -> list[float]:
    """The query's unit vector plus FEEDBACK_BETA times the mean of the unit vectors of the
    best chunks of the first FEEDBACK_DOCUMENTS documents of the shipped fusion."""
    chunks: list[str] = []
    seen: set[str] = set()
    heads = [lists["dense"][:100], lists["fulltext"][:100]]
    source = {cid: src for items in heads for cid, src, _ in items}
    for chunk, _ in document_fusion(heads):
        if source[chunk] not in seen and len(chunks) < FEEDBACK_DOCUMENTS:
            seen.add(source[chunk])
            chunks.append(chunk)
    cursor = await conn.execute(
        sql.SQL("SELECT embedding::real[] AS e FROM {t} WHERE id = ANY(%s)").format(
            t=chunk_table(collection)
        ),
        (chunks,),
    )
    vectors = [_unit(row["e"]) for row in await cursor.fetchall()]
    moved = _unit(vector)
    for v in vectors:
        moved = [m + FEEDBACK_BETA * x / len(vectors) for m, x in zip(moved, v, strict=True)]
    return moved


def _unit(vector: Sequence[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def _ndcg_recall(
    run: dict[str, list[str]], qrels: dict[str, dict[str, int]]
) -> tuple[float, float]:
    metrics = evaluate(run, qrels)
    return round(metrics["ndcg@10"], 4), round(metrics["recall@100"], 4)


def _documents(items: Sequence[Candidate]) -> list[str]:
    return list(dict.fromkeys(_doc(s) for _, s, _ in items))[:DEPTH]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Score every fusion on every dataset (and, with the grid, every BM25 k1 and b)."""
    table = fusions()
    results: dict[str, dict[str, float]] = {}
    recalls: dict[str, dict[str, float]] = {}
    grid: dict[str, dict[str, list[float]]] = {}
    for spec in args.dataset:
        path, _, collection = spec.partition(":")
        dataset = Path.cwd() / path
        name = collection or dataset.name
        logger.info("%s: fetching the candidate lists of every %s query", name, args.split)
        lists, qrels = await candidate_lists(args, dataset, name)
        results[name], recalls[name] = {}, {}
        for fusion, fuse in table.items():
            run = {qid: list(dict.fromkeys(fuse(found)))[:DEPTH] for qid, found in lists.items()}
            results[name][fusion], recalls[name][fusion] = _ndcg_recall(run, qrels)
        if args.bm25_grid:
            grid[name] = {}
            for k1, b in BM25_GRID:
                key = f"bm25 {k1} {b}"
                alone = {qid: _documents(found[key]) for qid, found in lists.items()}
                fused = {
                    qid: table["doc-0.5"]({"dense": found["dense"], "fulltext": found[key]})
                    for qid, found in lists.items()
                }
                grid[name][f"{k1} {b}"] = [
                    _ndcg_recall(alone, qrels)[0],
                    _ndcg_recall(
                        {q: list(dict.fromkeys(r))[:DEPTH] for q, r in fused.items()}, qrels
                    )[0],
                ]
    split = f"pseudo-{args.pseudo_queries}" if args.pseudo_queries else args.split
    figures: dict[str, Any] = {"split": split, "shipped": "doc-0.5", "ndcg@10": results,
                               "recall@100": recalls}  # fmt: skip
    if args.bm25_grid:
        figures["bm25_grid"] = grid
    return figures


def render(f: dict[str, Any]) -> str:
    """nDCG@10 / Recall@100 of every fusion (rows) on every dataset (columns), and the better
    single list's nDCG@10."""
    names = list(f["ndcg@10"])
    lines = [
        f"nDCG@10 / Recall@100, {f['split']} split",
        f"{'fusion':<18}" + "".join(f"{n:>18}" for n in names),
    ]
    for fusion in next(iter(f["ndcg@10"].values())):
        cells = (
            f"{f['ndcg@10'][n][fusion]:>10.4f} /{f['recall@100'][n][fusion]:>6.3f}" for n in names
        )
        lines.append(f"{fusion:<18}" + "".join(cells))
    best = (max(f["ndcg@10"][n]["dense"], f["ndcg@10"][n]["fulltext"]) for n in names)
    lines.append(f"{'best single':<18}" + "".join(f"{b:>10.4f}        " for b in best))
    if "bm25_grid" in f:
        lines += ["", f"BM25 k1 b: full text / doc-0.5 nDCG@10, {f['split']} split"]
        lines.append(f"{'k1 b':<18}" + "".join(f"{n:>18}" for n in f["bm25_grid"]))
        for key in next(iter(f["bm25_grid"].values())):
            cells = (
                f"{f['bm25_grid'][n][key][0]:>10.4f} /{f['bm25_grid'][n][key][1]:>6.4f}"
                for n in f["bm25_grid"]
            )
            lines.append(f"{key:<18}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.fusion_eval",
        description="Fusions of the dense and full-text lists, on several collections.",
    )
    parser.add_argument(
        "--dataset", nargs="+", required=True, help="BEIR folders, each as DIR:COLLECTION"
    )
    parser.add_argument("--split", default="train", help="qrels split (tune on train)")
    parser.add_argument(
        "--bm25-grid", action="store_true", help="also sweep BM25's k1 and b (slower)"
    )
    parser.add_argument(
        "--pseudo-queries",
        choices=["title", "first"],
        help=f"instead of the split's queries, {PSEUDO_QUERIES} documents each queried by its "
        "title or its first sentence (a calibration made from the collection itself)",
    )
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
