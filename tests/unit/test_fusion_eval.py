"""What `bench.fusion_eval` computes beside the shipped fusion."""

import pytest

from bench.fusion_eval import _unit


def test_unit_vectors() -> None:
    assert _unit([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    assert _unit([0.0, 0.0]) == [0.0, 0.0]
