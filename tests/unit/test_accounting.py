"""Cost from a price table, per-node totals, and active wall time."""

import pytest

from app.accounting import (
    Tokens,
    UsageRecord,
    active_ms,
    cost_of,
    per_node,
    price_of,
    tokens_used,
)
from app.settings import DEFAULT_PRICES, ModelPrice

PRICES = {
    "openai:gpt-4o": ModelPrice(input_per_mtok=2.5, output_per_mtok=10.0),
    "mistral-small": ModelPrice(input_per_mtok=1.0, output_per_mtok=3.0),
}


def record(
    node: str,
    started: float,
    ended: float,
    *,
    tokens: tuple[int, int] = (0, 0),
    cost: float = 0.0,
    attempts: int = 1,
) -> UsageRecord:
    return UsageRecord(
        node=node,
        step_id=None,
        model=None,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=cost,
        latency_ms=(ended - started) * 1000,
        started_at=started,
        ended_at=ended,
        attempts=attempts,
        estimated=False,
    )


class TestCost:
    def test_full_provider_string(self) -> None:
        cost = cost_of("openai:gpt-4o", Tokens(1_000_000, 500_000), PRICES)
        assert cost == pytest.approx(2.5 + 5.0)

    def test_falls_back_to_the_name_after_the_prefix(self) -> None:
        assert price_of("mistralai:mistral-small", PRICES) == PRICES["mistral-small"]
        cost = cost_of("mistralai:mistral-small", Tokens(2_000, 1_000), PRICES)
        assert cost == pytest.approx((2_000 * 1.0 + 1_000 * 3.0) / 1e6)

    def test_unknown_model_is_free(self) -> None:
        assert cost_of("acme:unknown", Tokens(10_000, 10_000), PRICES) == 0.0
        assert cost_of("gpt-4o", Tokens(10_000, 10_000), PRICES) == 0.0

    def test_default_prices(self) -> None:
        assert cost_of("local", Tokens(10**6, 10**6), DEFAULT_PRICES) == 0.0
        expected = 0.15 + 0.60
        assert cost_of("openai:gpt-4o-mini", Tokens(10**6, 10**6), DEFAULT_PRICES) == (
            pytest.approx(expected)
        )

    def test_tokens(self) -> None:
        total = Tokens(1, 2) + Tokens(10, 20)
        assert (total.input, total.output, total.total) == (11, 22, 33)


class TestPerNode:
    def test_aggregates_by_node_in_first_seen_order(self) -> None:
        records = [
            record("planner", 0, 1, tokens=(10, 5), cost=0.5),
            record("reasoning", 1, 2, tokens=(7, 3), cost=0.25, attempts=3),
            record("reasoning", 1, 3, tokens=(1, 1), cost=0.25, attempts=1),
            record("finalize", 3, 3.5),
        ]
        totals = per_node(records)
        assert list(totals) == ["planner", "reasoning", "finalize"]
        assert totals["reasoning"] == {
            "calls": 2,
            "input_tokens": 8,
            "output_tokens": 4,
            "total_tokens": 12,
            "cost": 0.5,
            "latency_ms": pytest.approx(3000.0),
            "retries": 2,
        }
        assert totals["planner"]["retries"] == 0
        assert totals["finalize"]["total_tokens"] == 0
        assert tokens_used(records) == 15 + 10 + 2

    def test_zero_attempts_count_no_retries(self) -> None:
        assert per_node([record("dispatch", 0, 1, attempts=0)])["dispatch"]["retries"] == 0

    def test_empty(self) -> None:
        assert per_node([]) == {}
        assert tokens_used([]) == 0


class TestActiveMs:
    def test_overlapping_work_counts_once(self) -> None:
        records = [record("reasoning", 10.0, 12.0), record("reasoning", 10.5, 11.0)]
        records.append(record("reasoning", 11.5, 13.0))
        assert active_ms(records) == pytest.approx(3000.0)

    def test_gaps_are_excluded(self) -> None:
        # A person took 100 s to approve between the two spans.
        records = [record("planner", 200.0, 201.0), record("finalize", 100.0, 101.5)]
        assert active_ms(records) == pytest.approx(2500.0)

    def test_touching_spans(self) -> None:
        records = [record("a", 0.0, 1.0), record("b", 1.0, 2.0)]
        assert active_ms(records) == pytest.approx(2000.0)

    def test_empty(self) -> None:
        assert active_ms([]) == 0.0
