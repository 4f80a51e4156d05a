"""The scalings `bench.fusion_eval` compares against the shipped fusion."""

import pytest

from bench.fusion_eval import _unit, bounded_fusion


def test_bounded_fusion_scales_each_list_from_its_lower_bound() -> None:
    dense = [("a#0", "a", 0.8), ("b#0", "b", 0.6), ("c#0", "c", 0.4)]
    full = [("c#0", "c", 10.0), ("a#1", "a", 2.0)]
    # From -1, dense barely separates a (1.0), b (1.6/1.8) and c (1.4/1.8); the full text's
    # 10 against 2 decides.
    assert bounded_fusion([dense, full], lows=[-1.0, 0.0], weights=[0.5, 0.5]) == ["c", "a", "b"]
    # From its last candidate, dense spreads them from 1 to 0 and a's lead in it holds.
    assert bounded_fusion([dense, full], lows=[None, 0.0], weights=[0.5, 0.5]) == ["a", "c", "b"]


def test_bounded_fusion_takes_a_documents_best_chunk_and_skips_empty_lists() -> None:
    dense = [("a#0", "a", 0.2), ("a#1", "a", 0.9), ("b#0", "b", 0.5)]
    assert bounded_fusion([dense, []], lows=[0.0, 0.0], weights=[1.0, 1.0]) == ["a", "b"]


def test_unit_vectors() -> None:
    assert _unit([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    assert _unit([0.0, 0.0]) == [0.0, 0.0]
