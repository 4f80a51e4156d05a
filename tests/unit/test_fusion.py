"""Fusing hybrid search's two lists at the document level, and reciprocal rank fusion."""

import pytest

from retrievers.fusion import LATER_CHUNK, document_fusion, rrf


def test_each_list_is_scaled_and_the_lists_count_equally() -> None:
    dense = [("a1", "a", 0.9), ("b1", "b", 0.5), ("c1", "c", 0.1)]
    full = [("c1", "c", 30.0), ("d1", "d", 10.0)]
    fused = dict(document_fusion([dense, full]))
    assert fused == pytest.approx({"a1": 0.5, "b1": 0.25, "c1": 0.5, "d1": 0.0})
    leaning = document_fusion([dense, full], weights=[0.8, 0.2])
    assert leaning[0] == ("a1", pytest.approx(0.8))
    # A list of one chunk (or of equal scores) holds only its best.
    assert document_fusion([[("x", "x", 1.0)], []]) == [("x", 0.5)]
    assert dict(document_fusion([[("x", "x", 0.3)], [("y", "y", 2.0), ("x", "x", 2.0)]])) == {
        "x": 1.0,
        "y": 0.5,
    }


def test_a_document_counts_its_best_chunk_in_each_list() -> None:
    # Document "p": its first chunk is the closest in meaning, its second holds the words.
    dense = [("p1", "p", 0.9), ("q1", "q", 0.8), ("p2", "p", 0.5), ("z1", "z", 0.1)]
    full = [("p2", "p", 12.0), ("q1", "q", 10.0), ("z1", "z", 2.0)]
    fused = document_fusion([dense, full])
    # Chunk by chunk, q1 (found high by both) would beat both of p's chunks.
    assert [c for c, _ in fused][:2] == ["p2", "q1"]
    assert fused[0][1] == pytest.approx(1.0)  # p: best in both lists
    assert dict(fused)["p1"] == pytest.approx(LATER_CHUNK)


def test_one_documents_chunks_do_not_crowd_the_next_documents_out() -> None:
    dense = [(f"a{i}", "a", 1.0 - i / 100) for i in range(4)] + [("b1", "b", 0.9), ("c1", "c", 0.0)]
    fused = [chunk for chunk, _ in document_fusion([dense, []])]
    assert fused[:3] == ["a0", "b1", "a1"]
    scores = [score for _, score in document_fusion([dense, []])]
    assert scores == sorted(scores, reverse=True)


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([["a", "b"], ["b", "c"]], k=10)
    assert [i for i, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 12 + 1 / 11)


def _documents(fused: list[tuple[str, float]]) -> list[str]:
    return list(dict.fromkeys(chunk.split("#")[0] for chunk, _ in fused))


def test_document_fusion_scales_each_list_from_a_given_lower_bound() -> None:
    dense = [("a#0", "a", 0.8), ("b#0", "b", 0.6), ("c#0", "c", 0.4)]
    full = [("c#0", "c", 10.0), ("a#1", "a", 2.0)]
    # From -1, dense barely separates a (1.0), b (1.6/1.8) and c (1.4/1.8); the full text's
    # 10 against 2 decides.
    fused = document_fusion([dense, full], weights=[0.5, 0.5], lows=[-1.0, 0.0])
    assert _documents(fused) == ["c", "a", "b"]
    # From its last candidate, dense spreads them from 1 to 0 and a's lead in it holds.
    fused = document_fusion([dense, full], weights=[0.5, 0.5], lows=[None, 0.0])
    assert _documents(fused) == ["a", "c", "b"]


def test_document_fusion_from_a_lower_bound_takes_a_documents_best_chunk() -> None:
    dense = [("a#0", "a", 0.2), ("a#1", "a", 0.9), ("b#0", "b", 0.5)]
    fused = document_fusion([dense, []], weights=[1.0, 1.0], lows=[0.0, 0.0])
    assert _documents(fused) == ["a", "b"]
