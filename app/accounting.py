"""Tokens, cost and latency: per call, per node, per run, and the per-run token budget."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NotRequired

from typing_extensions import TypedDict

from app.model_routes import ModelFallback
from app.settings import ModelPrice, get_settings


class UsageRecord(TypedDict):
    """One node execution: what it spent and how long it took."""

    node: str
    step_id: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost: float
    latency_ms: float
    started_at: float
    ended_at: float
    attempts: int
    estimated: bool
    """The model reported no usage; the token counts are estimates."""
    fallbacks: NotRequired[list[ModelFallback]]
    """The models that failed before `model` answered, in order (none: the route's first
    model answered)."""


class NodeTotals(TypedDict):
    """A node's totals over a run."""

    calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float
    latency_ms: float
    retries: int


@dataclass(frozen=True)
class Tokens:
    """Token counts of one or more model calls."""

    input: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input + self.output

    def __add__(self, other: "Tokens") -> "Tokens":
        return Tokens(self.input + other.input, self.output + other.output)


def price_of(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice:
    """Return the price of `model`; unknown models are free, so that costs are never invented.

    The lookup tries the full provider string, then the name after the provider prefix.
    """
    for key in (model, model.split(":", 1)[-1]):
        if key in prices:
            return prices[key]
    return ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)


def cost_of(model: str, tokens: Tokens, prices: Mapping[str, ModelPrice] | None = None) -> float:
    """Return the cost of `tokens` on `model` from the price table (default: the process's,
    `AGENTGRAPH_PRICES`). Prices are the process's, never a run's: a caller cannot make its
    own run look cheaper."""
    price = price_of(model, get_settings().prices if prices is None else prices)
    return (tokens.input * price.input_per_mtok + tokens.output * price.output_per_mtok) / 1e6


def tokens_used(records: Iterable[UsageRecord]) -> int:
    """Return the total tokens spent by the records."""
    return sum(r["input_tokens"] + r["output_tokens"] for r in records)


def per_node(records: Iterable[UsageRecord]) -> dict[str, NodeTotals]:
    """Aggregate usage records by node, in first-seen order."""
    totals: dict[str, NodeTotals] = {}
    for r in records:
        t = totals.setdefault(
            r["node"],
            NodeTotals(
                calls=0,
                input_tokens=0,
                output_tokens=0,
                total_tokens=0,
                cost=0.0,
                latency_ms=0.0,
                retries=0,
            ),
        )
        t["calls"] += 1
        t["input_tokens"] += r["input_tokens"]
        t["output_tokens"] += r["output_tokens"]
        t["total_tokens"] += r["input_tokens"] + r["output_tokens"]
        t["cost"] += r["cost"]
        t["latency_ms"] += r["latency_ms"]
        t["retries"] += max(0, r["attempts"] - 1)
    return totals


def active_ms(records: Iterable[UsageRecord]) -> float:
    """Return the wall time during which any node ran: overlapping (parallel) work counts
    once and time spent waiting for a person counts not at all."""
    spans = sorted((r["started_at"], r["ended_at"]) for r in records)
    total = 0.0
    current_start, current_end = None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total * 1000
