"""Request and response bodies of the HTTP API; option names match the CLI's."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.settings import ApprovalPolicy, PlannerKind
from graphs.multitask import Strategy
from nodes.context import Mode, Pattern, Synthesis
from retrievers.names import COLLECTION_NAME_PATTERN

MAX_QUESTION_CHARS = 20_000
THREAD_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""A thread id: 1 to 200 characters, none of them a control character (Postgres text holds
no NUL, and an id is shown in logs and terminals)."""
MAX_THREAD_ID_CHARS = 200


class RunOptions(BaseModel):
    """Per-run options, under the same names as the CLI options; unset means the default."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="'local' or a provider string.")
    approval: ApprovalPolicy | None = Field(default=None, description="When to stop for a person.")
    approve_final: bool | None = Field(default=None, description="Also approve the answer.")
    planner: PlannerKind | None = Field(default=None, description="rules or llm.")
    mode: Mode | None = Field(default=None, description="auto, direct or plan.")
    synthesis: Synthesis | None = Field(default=None, description="How answers become one.")
    pattern: Pattern | None = Field(
        default=None,
        description="single; committee (agents answer, a judge picks); supervisor (hands off).",
    )
    max_replans: int | None = Field(default=None, ge=0, description="Replan limit.")
    token_budget: int | None = Field(default=None, ge=1, description="Tokens the run may spend.")
    max_steps: int | None = Field(default=None, ge=1, description="Largest plan accepted.")
    max_tool_calls: int | None = Field(
        default=None, ge=1, le=20, description="Tool calls one tool step may make."
    )
    max_output_tokens: int | None = Field(
        default=None, ge=1, description="Longest answer one model call may write."
    )
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_NAME_PATTERN,
        description="Answer every step from this document collection (rag steps).",
    )
    documents: bool | None = Field(
        default=None,
        description="Without a collection, answer the steps that match an ingested "
        "collection from it (default true).",
    )

    def overrides(self) -> dict[str, Any]:
        """Return the run options that were set (only those, also on a subclass)."""
        return self.model_dump(exclude_none=True, include=set(RunOptions.model_fields))


class RunRequest(RunOptions):
    """Start a run: a question, an optional thread id, and per-run options."""

    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, description="The question or task."
    )
    thread_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_THREAD_ID_CHARS,
        pattern=THREAD_ID_PATTERN,
        description="Continue this thread; a new one is created when unset.",
    )
    multitask_strategy: Strategy = Field(
        default="reject",
        description="When a run holds the thread: reject (409), enqueue (run after it), "
        "interrupt (stop it at its next super-step, keeping what it finished, then run) or "
        "rollback (stop it and discard its checkpoints, then run).",
    )


class Decision(BaseModel):
    """The resume value of an approval interrupt."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "edit"]
    reason: str | None = Field(default=None, max_length=2_000)
    plan: dict[str, Any] | None = Field(default=None, description="The edited plan (edit only).")


class RejectBody(BaseModel):
    """Why an approval is rejected."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2_000)


class ForkRequest(BaseModel):
    """Branch a thread at a checkpoint, applying state updates."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_id: str = Field(min_length=1, max_length=200)
    values: dict[str, Any] = Field(default_factory=dict, description="State keys to set.")
    as_node: str | None = Field(default=None, description="Apply the update as this node.")


class AuditedCall(BaseModel):
    """One tool call, as the audit log keeps it."""

    step_id: str
    agent: str
    tool: str
    arguments: dict[str, Any]
    status: str = Field(description="ok, refused, invalid or failed.")
    result_chars: int
    duration_ms: float
    approval: str | None = Field(description="Who approved the call, or 'not needed'.")
    error: str | None
    created_at: datetime | None


class AuditDocument(BaseModel):
    """A thread's tool calls, oldest first."""

    thread_id: str
    calls: list[AuditedCall]


class ThreadDeleted(BaseModel):
    """A thread deleted wholly."""

    thread_id: str
    checkpoints_deleted: int


class RunResult(BaseModel):
    """Where a thread stands after a run: the final result or the pending interrupt."""

    thread_id: str
    run_id: str | None = None
    status: Literal["running", "interrupted", "done", "failed", "rejected"]
    answer: str | None = None
    citations: list[dict[str, Any]] = Field(default_factory=list)
    plan: dict[str, Any] | None = None
    pending_approval: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    error: str | None = None


class ThreadDocument(BaseModel):
    """A thread as `GET /api/v1/threads/{id}` shows it."""

    thread_id: str
    status: Literal["running", "interrupted", "done", "failed", "rejected"]
    request: str | None
    answer: str | None
    citations: list[dict[str, Any]]
    plan: dict[str, Any] | None
    plan_history: list[dict[str, Any]]
    pending_approval: dict[str, Any] | None
    report: dict[str, Any] | None
    checkpoint_id: str | None
    next: list[str]
    can_continue: bool = Field(
        description="The run was cut off (a server stop, a crash): steps are left, nothing "
        "awaits a decision and no run holds the thread. POST .../continue runs the rest; "
        "until then the status reads 'running'."
    )


class PendingApproval(BaseModel):
    """A thread waiting for a person."""

    thread_id: str
    payload: dict[str, Any]
    waiting_since: str
    waiting_s: float


class ErrorBody(BaseModel):
    """Every error response."""

    error: str
    message: str
    detail: list[dict[str, Any]] | None = None
