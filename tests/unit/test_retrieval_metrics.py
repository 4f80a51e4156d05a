"""Retrieval metrics and fusion on hand-made rankings with known values."""

import math

import pytest

from retrievers.fusion import rrf
from retrievers.metrics import evaluate, mrr_at, ndcg_at, recall_at

QRELS = {
    "q1": {"a": 1, "c": 1},  # two relevant docs
    "q2": {"x": 1},  # one relevant doc, never retrieved
    "q3": {"m": 2, "n": 1},  # graded
}
RUN = {
    "q1": ["a", "b", "c", "d"],
    "q2": ["y", "z"],
    "q3": ["n", "m"],
}


def test_ndcg_of_a_hand_made_ranking() -> None:
    # relevant at ranks 1 and 3: (1 + 1/log2(4)) / (1 + 1/log2(3))
    expected = (1 + 1 / 2) / (1 + 1 / math.log2(3))
    assert ndcg_at(RUN["q1"], QRELS["q1"], 10) == pytest.approx(expected)
    assert ndcg_at(RUN["q2"], QRELS["q2"], 10) == 0.0


def test_graded_ndcg_uses_exponential_gain() -> None:
    # ranking n (gain 1), m (gain 3); ideal m, n
    dcg = 1 + 3 / math.log2(3)
    idcg = 3 + 1 / math.log2(3)
    assert ndcg_at(RUN["q3"], QRELS["q3"], 10) == pytest.approx(dcg / idcg)


def test_recall_and_mrr_respect_the_cut_off() -> None:
    assert recall_at(RUN["q1"], QRELS["q1"], 2) == 0.5
    assert recall_at(RUN["q1"], QRELS["q1"], 3) == 1.0
    assert mrr_at(["b", "c", "a"], QRELS["q1"], 10) == 0.5
    assert mrr_at(["b", "d", "a"], QRELS["q1"], 2) == 0.0


def test_evaluate_averages_over_judged_queries_and_counts_missing_ones_as_zero() -> None:
    figures = evaluate({"q1": RUN["q1"], "q3": RUN["q3"]}, QRELS)
    q1 = (1 + 1 / 2) / (1 + 1 / math.log2(3))
    q3 = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert figures["ndcg@10"] == pytest.approx((q1 + 0 + q3) / 3)
    assert figures["recall@10"] == pytest.approx(2 / 3)
    assert figures["recall@100"] == pytest.approx(2 / 3)
    assert figures["mrr@10"] == pytest.approx((1 + 0 + 1) / 3)


def test_rrf_rewards_agreement_between_lists() -> None:
    fused = rrf([["a", "b", "c"], ["b", "c", "d"]], k=60)
    ids = [i for i, _ in fused]
    assert ids == ["b", "c", "a", "d"]  # ranks 2 + 1 beat 1 alone
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert dict(fused)["d"] == pytest.approx(1 / 63)
