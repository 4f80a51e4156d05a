"""Fusing hybrid search's two lists: convex combination, agreement weights, head and tail."""

import pytest

from retrievers.fusion import HEAD, agreement_weights, convex, document_ranking, hybrid_fusion, rrf


def test_convex_scales_each_list_and_weights_them() -> None:
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    full = [("c", 30.0), ("d", 10.0)]
    fused = dict(convex([dense, full]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.0})
    leaning = convex([dense, full], weights=[0.8, 0.2])
    assert leaning[0] == ("a", pytest.approx(0.8))
    assert convex([[("x", 1.0)], []]) == [("x", 0.0)]  # one item: no spread to scale by


def test_agreement_weights_favour_the_list_the_other_finds_too() -> None:
    dense = [f"d{i}" for i in range(20)]
    full = [f"x{i}" for i in range(10)] + [f"d{i}" for i in range(10)]  # its best: nowhere
    weights = agreement_weights([dense, full], top=10, depth=100)
    assert sum(weights) == pytest.approx(2.0)
    assert weights[0] > weights[1]
    assert weights[1] == pytest.approx(2 * 0.1 / (1.0 + 0.1))  # the floor, not zero
    assert agreement_weights([["a"], ["b"]]) == pytest.approx([1.0, 1.0])  # nothing known


def test_hybrid_fusion_ranks_the_head_by_scores_and_the_tail_by_rank() -> None:
    ids = [f"c{i}" for i in range(HEAD + 10)]
    ranks = [ids, list(reversed(ids))]
    sources = [[f"doc-{i}" for i in ids], [f"doc-{i}" for i in reversed(ids)]]
    scored = [[(c, 1.0 - n / 100) for n, c in enumerate(r)] for r in ranks]
    fused = hybrid_fusion(ranks, sources, scored)
    head = convex(scored, weights=[0.5, 0.5])[:HEAD]
    assert fused[:HEAD] == head
    tail_ids = [i for i, _ in fused[HEAD:]]
    assert tail_ids == [i for i, _ in rrf(ranks) if i not in {h for h, _ in head}]
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)  # one ranking, best first
    assert sorted(i for i, _ in fused) == sorted(ids)


def test_document_ranking_keeps_each_document_at_its_first_chunk() -> None:
    assert document_ranking([("c1", "a"), ("c2", "b"), ("c3", "a"), ("c4", "c")]) == [
        "a",
        "b",
        "c",
    ]
