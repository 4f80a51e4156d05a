"""Compare ways of fusing the dense and full-text lists, on several collections at once.

For every query of each dataset's split, the two candidate lists (200 chunks each, with their
scores) are fetched once from the ingested collection, then each fusion is applied to the
same lists and scored at the document level (a document ranks where its first chunk does),
as `bench.retrieval_eval` scores them. The fusions:

- `rrf-K`: reciprocal rank fusion with constant K (the shipped default is `RRF_K`);
- `convex-A`: a convex combination of min-max-normalised scores, weight A on dense;
- `rrf-doc-K`: RRF over document lists (each list reduced to its documents first);
- `agree-K`: RRF whose list weights follow how much each list agrees with the other's top
  (`retrievers.fusion.agreement_weights`);
- `dense`, `fulltext`: either list alone.

Run after `bench.retrieval_eval` has ingested the datasets (one collection each):

    python -m bench.fusion_eval --split train \
        --dataset ../shared/datasets/scifact:scifact bench/data/cranfield:cranfield \
        bench/data/cisi:cisi [--json]
"""

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.errors import AgentGraphError
from bench.common import add_database_options, check_database_options, settings_for
from bench.retrieval_eval import DEPTH, doc_ids, load_queries
from retrievers import fusion as product
from retrievers.fusion import RRF_K, agreement_weights, document_ranking, rrf
from retrievers.metrics import evaluate
from retrievers.service import open_collection

logger = logging.getLogger("bench.fusion_eval")

CANDIDATES = 2 * DEPTH
Lists = tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]
"""The dense and the full-text candidates of one query: (chunk id, source, score), best first."""


def _doc(source: str) -> str:
    return source.rsplit("#", 1)[-1]


def minmax(items: Sequence[tuple[str, str, float]]) -> dict[str, float]:
    """Scores scaled to [0, 1] within their list."""
    if not items:
        return {}
    low, high = min(s for _, _, s in items), max(s for _, _, s in items)
    span = high - low or 1.0
    return {cid: (s - low) / span for cid, _, s in items}


def zscored(alpha: float) -> Callable[[Lists], list[str]]:
    """A convex combination of z-scored scores (missing from a list: that list's minimum)."""
    import statistics

    def scale(items: Sequence[tuple[str, str, float]]) -> tuple[dict[str, float], float]:
        if len(items) < 2:
            return {c: 0.0 for c, _, _ in items}, 0.0
        values = [s for _, _, s in items]
        mean, sd = statistics.fmean(values), statistics.pstdev(values) or 1.0
        scaled = {c: (s - mean) / sd for c, _, s in items}
        return scaled, min(scaled.values())

    def fuse(lists: Lists) -> list[str]:
        (dense, dmin), (full, fmin) = scale(lists[0]), scale(lists[1])
        source = {cid: src for items in lists for cid, src, _ in items}
        scored = {
            c: alpha * dense.get(c, dmin) + (1 - alpha) * full.get(c, fmin) for c in {*dense, *full}
        }
        return [source[c] for c, _ in sorted(scored.items(), key=lambda p: -p[1])]

    return fuse


def fusions() -> dict[str, Callable[[Lists], list[str]]]:
    """Every fusion compared, by name: each maps the two lists to chunk sources, best first."""

    def by_ids(fused: list[tuple[str, float]], lists: Lists) -> list[str]:
        source = {cid: src for items in lists for cid, src, _ in items}
        return [source[cid] for cid, _ in fused]

    def rrf_k(k: int) -> Callable[[Lists], list[str]]:
        return lambda lists: by_ids(rrf([[c for c, _, _ in ls] for ls in lists], k=k), lists)

    def convex(alpha: float) -> Callable[[Lists], list[str]]:
        def fuse(lists: Lists) -> list[str]:
            dense, full = minmax(lists[0]), minmax(lists[1])
            ids = {*dense, *full}
            scored = {c: alpha * dense.get(c, 0.0) + (1 - alpha) * full.get(c, 0.0) for c in ids}
            return by_ids(sorted(scored.items(), key=lambda p: -p[1]), lists)

        return fuse

    def rrf_doc(k: int) -> Callable[[Lists], list[str]]:
        def fuse(lists: Lists) -> list[str]:
            docs = [document_ranking([(c, _doc(s)) for c, s, _ in ls]) for ls in lists]
            return [f"#{d}" for d, _ in rrf(docs, k=k)]

        return fuse

    def agree(k: int) -> Callable[[Lists], list[str]]:
        def fuse(lists: Lists) -> list[str]:
            rankings = [[c for c, _, _ in ls] for ls in lists]
            docs = [[_doc(s) for _, s, _ in ls] for ls in lists]
            weights = agreement_weights(docs)
            return by_ids(rrf(rankings, k=k, weights=weights), lists)

        return fuse

    table: dict[str, Callable[[Lists], list[str]]] = {
        "dense": lambda lists: [s for _, s, _ in lists[0]],
        "fulltext": lambda lists: [s for _, s, _ in lists[1]],
    }
    for k in (5, 10, 20, 60):
        table[f"rrf-{k}"] = rrf_k(k)
        table[f"rrf-doc-{k}"] = rrf_doc(k)
        table[f"agree-{k}"] = agree(k)
    for alpha in (0.3, 0.4, 0.5, 0.6, 0.7):
        table[f"convex-{alpha}"] = convex(alpha)
    for depth in (50, 100):  # what a search of fewer candidates sees (the lists' heads)
        half = convex(0.5)
        table[f"convex-0.5@{depth}"] = lambda lists, d=depth, f=half: f(
            (lists[0][:d], lists[1][:d])
        )
    table["zscore-0.5"] = zscored(0.5)

    def convex_agree(lists: Lists) -> list[str]:
        docs = [[_doc(s) for _, s, _ in ls] for ls in lists]
        weights = [w / 2 for w in agreement_weights(docs)]
        scored = product.convex([[(c, sc) for c, _, sc in ls] for ls in lists], weights=weights)
        return by_ids(scored, lists)

    table["convex-agree"] = convex_agree
    table["convex-agree@100"] = lambda lists: convex_agree((lists[0][:100], lists[1][:100]))

    def convex_agree_rrf_tail(lists: Lists) -> list[str]:
        head = convex_agree(lists)[:20]
        tail = [s for s in table["rrf-10"](lists) if s not in set(head)]
        return head + tail

    table["convex-agree+rrf"] = convex_agree_rrf_tail
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
            run = {qid: doc_ids(fuse(pair), DEPTH) for qid, pair in lists.items()}
            metrics = evaluate(run, qrels)
            results[name][fusion] = round(metrics["ndcg@10"], 4)
            recalls[name][fusion] = round(metrics["recall@100"], 4)
    return {"split": args.split, "shipped_rrf_k": RRF_K, "ndcg@10": results,
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
