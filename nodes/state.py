"""Graph state: a narrow input, the full run state, and what a worker receives."""

import operator
from collections.abc import Awaitable
from typing import Annotated, Literal, NotRequired, Protocol, TypeVar

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from app.accounting import NodeTotals, UsageRecord
from app.model_routes import FallbackTaken
from nodes.context import Context
from nodes.schemas import (
    ApprovalRecord,
    Citation,
    Critique,
    Plan,
    PlanRevision,
    RunStatus,
    Step,
    StepResult,
)

Route = Literal["direct", "plan"]


def merge_results(
    left: dict[str, StepResult], right: dict[str, StepResult]
) -> dict[str, StepResult]:
    """Merge step results by step id; a later result for the same id wins."""
    return {**left, **right}


class InputState(TypedDict):
    """What a caller sends to start a run."""

    request: str
    """The question or task, in the user's words."""


class RunReport(TypedDict):
    """Accounting and history of a run, shown after the answer."""

    status: RunStatus
    total_tokens: int
    input_tokens: int
    output_tokens: int
    total_cost: float
    latency_ms: float
    token_budget: int
    budget_exhausted: bool
    tokens_estimated: bool
    nodes: dict[str, NodeTotals]
    steps: list[dict[str, object]]
    plan_versions: int
    replans: int
    fallback_reasons: list[str]
    approvals: list[ApprovalRecord]
    verdict: str | None
    verdict_reason: str | None
    grounding: NotRequired[float | None]
    """Mean grounding of the rag steps (None when no step retrieved)."""
    model_fallbacks: NotRequired[list[FallbackTaken]]
    """Every model that failed a call and was replaced by the next of its route: where,
    why, and which model answered instead."""


class State(InputState, total=False):
    """Everything a run knows. Large blobs (documents, chunks) stay out; only ids go in."""

    options: dict[str, object]
    """The run's options (the context it started with), so a resume elsewhere reuses them."""
    route: Route
    """The orchestrator's choice: answer directly or plan."""
    plan: Plan
    """The plan being executed (the latest revision)."""
    plan_history: Annotated[list[PlanRevision], operator.add]
    """Every plan revision with its source and reason, oldest first."""
    results: Annotated[dict[str, StepResult], merge_results]
    """Step results by step id, across all plan revisions."""
    critique: Critique
    """The critic's latest verdict."""
    approvals: Annotated[list[ApprovalRecord], operator.add]
    """Decisions people gave at approval points."""
    approved_steps: Annotated[list[str], operator.add]
    """Ids of the steps of plans a person approved: the only steps whose gated tools run."""
    usage: Annotated[list[UsageRecord], operator.add]
    """One record per node execution: tokens, cost, latency, attempts."""
    answer: str
    """The final answer."""
    citations: list[Citation]
    """Citations backing the final answer."""
    status: RunStatus
    """Running, or how the run ended."""
    report: RunReport | None
    """The run report, written once at the end (None while the run is under way)."""


class OutputState(TypedDict, total=False):
    """What a finished run returns to its caller."""

    answer: str
    citations: list[Citation]
    status: RunStatus
    plan: Plan
    report: RunReport | None


class WorkerInput(TypedDict):
    """The payload `dispatch` sends to a worker for one step."""

    request: str
    step: Step
    dependencies: list[StepResult]
    tokens_used: int
    approval: str | None
    """Who approved the step's plan and when, or None when no person did."""


In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)


class Node(Protocol[In, Out]):
    """A node made by a factory: its input (the state or a `Send` payload) and the run's
    runtime in, its update out."""

    def __call__(self, state: In, *, runtime: Runtime[Context]) -> Awaitable[Out]: ...
