"""Shapes that travel through the graph: plans, step results, critiques, approvals.

They are TypedDicts so that checkpoints hold plain JSON-like data (no pickled classes) and
every surface (CLI, HTTP, Studio) shows them as they are. Pydantic validates them at the
edges through `TypeAdapter`.
"""

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from app.model_routes import ModelFallback
from app.settings import TimeoutAction

StepStatus = Literal["done", "failed", "skipped"]
Verdict = Literal["accept", "replan", "give_up"]
PlanSource = Literal["direct", "rules", "llm", "edit", "replan"]
Decision = Literal["approve", "reject", "edit"]
Gate = Literal["plan", "final"]
RunStatus = Literal["running", "done", "rejected", "failed"]


class Step(TypedDict):
    """One unit of work for a worker."""

    id: Annotated[str, Field(min_length=1, max_length=64, description="Unique step id.")]
    kind: Annotated[
        str, Field(description="Worker that runs the step: 'reasoning', 'rag' or 'tool'.")
    ]
    instruction: Annotated[str, Field(min_length=1, description="What the worker must do.")]
    depends_on: Annotated[list[str], Field(description="Ids of steps whose results it needs.")]
    requires_approval: Annotated[
        bool, Field(description="A person must approve the plan before this step runs.")
    ]
    agent: NotRequired[
        Annotated[str, Field(description="The manifest agent that runs it; the first if unset.")]
    ]
    tools: NotRequired[
        Annotated[list[str], Field(description="Tool steps: the tools it may call.")]
    ]
    pattern: NotRequired[
        Annotated[
            Literal["committee", "supervisor"],
            Field(description="Reasoning steps: answered by a committee, or a supervisor."),
        ]
    ]
    members: NotRequired[
        Annotated[
            list[str],
            Field(description="Its agents: a committee's members; a supervisor, then workers."),
        ]
    ]


class Plan(TypedDict):
    """A directed acyclic graph of steps toward one goal."""

    goal: Annotated[str, Field(description="The request the plan answers.")]
    steps: Annotated[list[Step], Field(description="The steps, in any order.")]


class PlanRevision(TypedDict):
    """One version of the plan and why it exists."""

    version: int
    source: PlanSource
    reason: str
    plan: Plan
    fallback_reason: str | None


class Citation(TypedDict):
    """A pointer from an answer to the retrieved text that supports it."""

    chunk_id: str
    source: str
    score: float
    quote: str


class StepUsage(TypedDict):
    """Tokens and cost one step spent."""

    input_tokens: int
    output_tokens: int
    cost: float


class FlaggedClaim(TypedDict):
    """A sentence of a rag answer that its citations do not back (`nodes.grounding`)."""

    sentence: str
    reason: Literal["uncited", "unsupported"]
    support: float
    """Share of the sentence's key terms found in the chunks it cites."""
    cited: list[str]


class ToolCallResult(TypedDict):
    """One tool call of a tool step, as the step's result keeps it (the audit log has more)."""

    tool: str
    arguments: dict[str, Any]
    status: str
    result: str


class Vote(TypedDict):
    """One committee member's answer to a step, and whether the judge chose it."""

    agent: str
    model: str
    answer: str
    status: str
    """done, or failed (the member's call failed or it answered nothing)."""
    chosen: bool


class Round(TypedDict):
    """One handoff of a supervised step: the worker agent asked, and its answer."""

    agent: str
    answer: str


class Judgement(TypedDict):
    """How a committee step's answer was chosen."""

    model: str
    """The judge's model; "" when no judge was needed (one answer only)."""
    chosen: str
    """The agent whose answer the step returns."""
    reason: str


class ArtifactRef(TypedDict):
    """An artefact a step produced, by reference: its content is in the artefact store
    (`app.artifacts`), never in the state."""

    id: str
    name: str
    media_type: str
    size: int


class StepResult(TypedDict):
    """What a worker returns for a step, success or not."""

    step_id: str
    kind: str
    status: StepStatus
    output: str
    citations: list[Citation]
    usage: StepUsage
    attempts: int
    latency_ms: float
    error: str | None
    grounding: NotRequired[float | None]
    """rag steps: mean share of each answer sentence supported by the chunks it cites."""
    dropped_citations: NotRequired[list[str]]
    """rag steps: citations the model wrote that named no retrieved chunk (dropped)."""
    extractive: NotRequired[bool]
    """rag steps: the answer was built from retrieved sentences, the model's being ungrounded."""
    tool_calls: NotRequired[list[ToolCallResult]]
    """tool steps: each call, its status and what it returned."""
    votes: NotRequired[list[Vote]]
    """committee steps: every member's answer."""
    judgement: NotRequired[Judgement]
    """committee steps: which answer the judge chose, and why."""
    rounds: NotRequired[list[Round]]
    """supervised steps: each worker the supervisor handed the task to, in order."""
    flagged_claims: NotRequired[list[FlaggedClaim]]
    """rag steps: the sentences of the model's answer that cite nothing retrieved, or whose
    key terms the chunks they cite lack; with any, the answer is not grounded."""
    model: NotRequired[str | None]
    """The chat model that answered the step (None when no model was asked)."""
    fallbacks: NotRequired[list[ModelFallback]]
    """The models that failed the step's calls before `model` answered, and why, in order."""
    artifacts: NotRequired[list[ArtifactRef]]
    """What the step produced beside its answer (a tool's structured or large output, a rag
    step's sources), stored apart and referenced by id."""


class Critique(TypedDict):
    """The critic's verdict on the results so far."""

    verdict: Verdict
    reason: str
    feedback: str
    coverage: float
    grounding: float | None
    failed_steps: list[str]
    tokens_used: int
    budget_exhausted: bool


class ApprovalDecision(TypedDict):
    """The resume value of every approval interrupt, on every surface."""

    decision: Decision
    reason: str | None
    plan: Plan | None
    by: NotRequired[str | None]
    """Who decided, as the surface that took the decision knows them (the server: the API
    key's `tenant/key id`); set by the surface, never by the client."""


class ApprovalRecord(TypedDict):
    """A decision a person gave, kept for the report."""

    gate: Gate
    decision: Decision
    reason: str | None
    at: str
    by: NotRequired[str | None]
    """Who decided (see `ApprovalDecision.by`)."""


class ApprovalRequest(TypedDict):
    """The interrupt payload: what a person needs to judge the plan or the answer."""

    gate: Gate
    thread_id: str | None
    reason: str
    risk: str
    plan: Plan
    answer: str | None
    error: str | None
    resume: dict[str, str]
    deadline: NotRequired[str | None]
    """When the gate stops waiting (ISO time, UTC), set by `approval_timeout`; None: never."""
    on_timeout: NotRequired[TimeoutAction | None]
    """What the deadline does when it passes, for this gate: the run's
    `approval_timeout_action`, except that `approve` escalates a gate that is not low-risk."""
    low_risk: NotRequired[bool]
    """No step of the plan requires approval or may call a gated tool (`nodes.approval`)."""
