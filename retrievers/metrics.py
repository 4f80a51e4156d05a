"""Retrieval metrics over BEIR-style qrels: nDCG@k, Recall@k, MRR@k."""

import math
from collections.abc import Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
"""query id -> {doc id -> relevance grade}."""
Run = Mapping[str, Sequence[str]]
"""query id -> doc ids, best first."""


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Return nDCG@k with graded gains (2^rel - 1), as BEIR's pytrec_eval computes it."""
    dcg = sum(
        (2 ** relevant.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranked[:k])
    )
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Return the share of relevant docs found in the first k."""
    wanted = {d for d, g in relevant.items() if g > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Return 1 / rank of the first relevant doc within the first k, else 0."""
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """Average nDCG@10, Recall@10, Recall@100 and MRR@10 over the judged queries.

    A judged query missing from `run` counts as retrieving nothing.
    """
    queries = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not queries:
        return {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in queries:
        ranked, relevant = run.get(q, []), qrels[q]
        totals["ndcg@10"] += ndcg_at(ranked, relevant, 10)
        totals["recall@10"] += recall_at(ranked, relevant, 10)
        totals["recall@100"] += recall_at(ranked, relevant, 100)
        totals["mrr@10"] += mrr_at(ranked, relevant, 10)
    return {name: value / len(queries) for name, value in totals.items()}
