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
- `doc-rrf-K`: RRF over the lists' documents.

Run after `bench.retrieval_eval` has ingested the datasets (one collection each):

    python -m bench.fusion_eval --split train \
        --dataset ../shared/datasets/scifact:scifact bench/data/cranfield:cranfield \
        bench/data/cisi:cisi [--json]
"""

import argparse
import asyncio
import json
import logging
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.errors import AgentGraphError
from bench.common import add_database_options, check_database_options, settings_for
from bench.retrieval_eval import DEPTH, load_queries
from retrievers.fusion import Candidate, document_fusion, rrf
from retrievers.metrics import evaluate
from retrievers.service import open_collection

logger = logging.getLogger("bench.fusion_eval")

CANDIDATES = 2 * DEPTH
Lists = tuple[list[Candidate], list[Candidate]]
"""The dense and the full-text candidates of one query: (chunk id, source, score), best first."""
Fusion = Callable[[Lists], list[str]]
"""A fusion: the two lists to documents, best first."""


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
        source = {cid: src for items in lists for cid, src, _ in items}
        return [_doc(source[cid]) for cid, _ in fused]

    def rrf_chunks(k: int) -> Fusion:
        return lambda lists: docs_of(rrf([[c for c, _, _ in ls] for ls in lists], k=k), lists)

    def doc_convex(alpha: float, depth: int = 100) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            heads = [ls[:depth] for ls in lists]
            return docs_of(document_fusion(heads, weights=[alpha, 1 - alpha]), lists)

        return fuse

    def doc_z(alpha: float, depth: int = 200) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            heads = [ls[:depth] for ls in lists]
            spread = [_spread(ls) if ls else 1.0 for ls in heads]
            weights = [alpha * spread[0], (1 - alpha) * spread[1]]
            return docs_of(document_fusion(heads, weights=weights), lists)

        return fuse

    def doc_agree(lists: Lists) -> list[str]:
        heads = [ls[:100] for ls in lists]
        weights = agreement_weights([[_doc(s) for _, s, _ in ls] for ls in heads])
        return docs_of(document_fusion(heads, weights=weights), lists)

    def doc_rrf(k: int) -> Fusion:
        def fuse(lists: Lists) -> list[str]:
            docs = [list(dict.fromkeys(_doc(s) for _, s, _ in ls)) for ls in lists]
            return [d for d, _ in rrf(docs, k=k)]

        return fuse

    def chunk_agree_rrf(lists: Lists) -> list[str]:
        heads = [ls[:100] for ls in lists]
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
        "dense": lambda lists: [_doc(s) for _, s, _ in lists[0]],
        "fulltext": lambda lists: [_doc(s) for _, s, _ in lists[1]],
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
    return table


async def candidate_lists(
    args: argparse.Namespace, dataset: Path, collection: str
) -> tuple[dict[str, Lists], dict[str, dict[str, int]]]:
    """Both candidate lists of every query of the split, and the split's qrels."""
    settings = settings_for(args)
    queries, qrels = load_queries(dataset, args.split)
    lists: dict[str, Lists] = {}
    async with open_collection(settings, collection, url=args.database_url) as (store, embedder):
        for qid, text in queries.items():
            vector = await asyncio.to_thread(embedder.embed_query, text)
            dense = await store.dense(vector, limit=CANDIDATES)
            full = await store.fulltext(text, limit=CANDIDATES)
            lists[qid] = (
                [(h.chunk_id, h.source, h.score) for h in dense],
                [(h.chunk_id, h.source, h.score) for h in full],
            )
    return lists, qrels


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Score every fusion on every dataset."""
    table = fusions()
    results: dict[str, dict[str, float]] = {}
    recalls: dict[str, dict[str, float]] = {}
    for spec in args.dataset:
        path, _, collection = spec.partition(":")
        dataset = Path.cwd() / path
        name = collection or dataset.name
        logger.info("%s: fetching both lists for every %s query", name, args.split)
        lists, qrels = await candidate_lists(args, dataset, name)
        results[name], recalls[name] = {}, {}
        for fusion, fuse in table.items():
            run = {qid: list(dict.fromkeys(fuse(pair)))[:DEPTH] for qid, pair in lists.items()}
            metrics = evaluate(run, qrels)
            results[name][fusion] = round(metrics["ndcg@10"], 4)
            recalls[name][fusion] = round(metrics["recall@100"], 4)
    return {"split": args.split, "shipped": "doc-0.5", "ndcg@10": results,
            "recall@100": recalls}  # fmt: skip


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
