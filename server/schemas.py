"""Request and response bodies of the HTTP API; option names match the CLI's."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from app.errors import ConfigError
from app.settings import MAX_REPLANS, MAX_STEPS, ApprovalPolicy, PlannerKind, TimeoutAction
from app.spans import parse_timeout
from graphs.multitask import Strategy
from nodes.context import Mode, Pattern, Synthesis
from retrievers.names import COLLECTION_NAME_PATTERN

MAX_QUESTION_CHARS = 20_000
THREAD_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""A thread id: 1 to 200 characters, none of them a control character (Postgres text holds
no NUL, and an id is shown in logs and terminals)."""
MAX_THREAD_ID_CHARS = 200
ID_PATTERN = THREAD_ID_PATTERN
"""Any other id a client sends (checkpoint, assistant, response): no control character."""


def refuse_nul(value: Any) -> Any:
    """Return JSON data unchanged, or raise ValueError when a string in it (a key or a value)
    holds a NUL character, which Postgres's jsonb cannot store."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain NUL characters (\\u0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key)
            refuse_nul(item)
    elif isinstance(value, list):
        for item in value:
            refuse_nul(item)
    return value


StorableText = Annotated[str, AfterValidator(refuse_nul)]
"""Text that Postgres stores in a text or jsonb column: no NUL character."""


class RunOptions(BaseModel):
    """Per-run options, under the same names as the CLI options; unset means the default."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="'local' or a provider string.")
    models: dict[str, str] | None = Field(
        default=None,
        description="The model per node role (planner, reasoning, rag, critic, synthesis), "
        "laid over the server's AGENTGRAPH_MODELS.",
    )
    fallbacks: dict[str, list[str]] | None = Field(
        default=None,
        description='Models to try in order, per node role or "*" for every role, when the '
        "role's model errors, times out or is rate-limited; laid over AGENTGRAPH_FALLBACKS.",
    )
    approval: ApprovalPolicy | None = Field(default=None, description="When to stop for a person.")
    approval_timeout: str | None = Field(
        default=None,
        description="How long an approval gate waits: a span (90s, 30m, 2d) or seconds.",
    )
    approval_timeout_action: TimeoutAction | None = Field(
        default=None,
        description="What a passed deadline does: reject, approve (low-risk gates only) or "
        "escalate.",
    )
    approve_final: bool | None = Field(default=None, description="Also approve the answer.")
    planner: PlannerKind | None = Field(default=None, description="rules or llm.")
    mode: Mode | None = Field(default=None, description="auto, direct or plan.")
    synthesis: Synthesis | None = Field(default=None, description="How answers become one.")
    pattern: Pattern | None = Field(
        default=None,
        description="single; committee (agents answer, a judge picks); supervisor (hands off).",
    )
    max_replans: int | None = Field(default=None, ge=0, le=MAX_REPLANS, description="Replan limit.")
    token_budget: int | None = Field(default=None, ge=1, description="Tokens the run may spend.")
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="Largest plan accepted."
    )
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

    @field_validator("approval_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # seconds
        if isinstance(value, str):
            try:
                parse_timeout(value, what="approval_timeout")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            return value.strip()
        return value

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


class BackgroundRunRequest(RunOptions):
    """Start a run in the background: a question, the answer to the thread's pending
    approval (`resume`), or `proceed` to continue a run that was cut off."""

    question: StorableText | None = Field(
        default=None, min_length=1, max_length=MAX_QUESTION_CHARS, description="The question."
    )
    resume: Decision | None = Field(default=None, description="Answer the pending approval.")
    proceed: bool = Field(default=False, description="Continue a run that was cut off.")
    multitask_strategy: Strategy = Field(
        default="reject",
        description="When a run of another surface holds the thread as this one starts "
        "(background runs of one thread already run one after another): as for "
        "/agent/run.stream.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> "BackgroundRunRequest":
        given = (self.question is not None, self.resume is not None, self.proceed)
        if sum(given) != 1:
            raise ValueError("give exactly one of question, resume and proceed: true")
        if self.question is None and self.overrides():
            raise ValueError("run options go with a question (a resume or continue keeps them)")
        if self.question is None and self.multitask_strategy != "reject":
            raise ValueError("only a question takes a multitask_strategy")
        refuse_nul(self.model_dump())  # the run's row keeps it as jsonb
        return self


class BackgroundRun(BaseModel):
    """A background run, as `GET /api/v1/threads/{id}/runs/{run_id}` shows it."""

    run_id: str
    thread_id: str
    status: Literal[
        "queued", "running", "interrupted", "done", "failed", "rejected", "cancelled"
    ] = Field(description="queued, running, or how it ended; interrupted: waits for a person.")
    question: str | None
    kind: Literal["request", "resume", "continue"]
    started_by: str
    cron_id: str | None = Field(description="The cron whose firing this run is.")
    attempts: int = Field(description="Times a worker took the run (more than 1: retried).")
    worker: str | None = Field(description="The worker (host:pid) that took it last.")
    error: str | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    stream_url: str


class CronRequest(RunOptions):
    """Schedule a question: each firing is a background run."""

    schedule: str = Field(
        min_length=1,
        max_length=200,
        description="A cron expression (minute hour day month weekday), optionally with a "
        "sixth field for seconds; times are UTC.",
    )
    question: StorableText = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    thread_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_THREAD_ID_CHARS,
        pattern=THREAD_ID_PATTERN,
        description="Run every firing on this thread; a new thread each time when unset.",
    )

    @model_validator(mode="after")
    def _storable(self) -> "CronRequest":
        refuse_nul(self.model_dump())  # the cron's row keeps it
        return self


class Cron(BaseModel):
    """A stored cron."""

    cron_id: str
    schedule: str
    question: str
    thread_id: str | None
    options: dict[str, Any]
    started_by: str
    next_run_at: str
    last_run_id: str | None
    created_at: str


class RejectBody(BaseModel):
    """Why an approval is rejected."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2_000)


class ForkRequest(BaseModel):
    """Branch a thread at a checkpoint, applying state updates."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
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


class ArtifactInfo(BaseModel):
    """One artefact a step of the thread produced (its content at its own URL)."""

    artifact_id: str
    step_id: str
    name: str
    media_type: str
    size: int
    created_at: datetime | None
    url: str


class ArtifactList(BaseModel):
    """A thread's artefacts, oldest first."""

    thread_id: str
    artifacts: list[ArtifactInfo]


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
    results: list[dict[str, Any]] = Field(
        description="Step results of every plan revision: status, output, citations (each "
        "with the quoted chunk), usage, timing, error."
    )
    critique: dict[str, Any] | None = Field(description="The critic's latest verdict.")
    checkpoint_id: str | None
    next: list[str]
    can_continue: bool = Field(
        description="The run was cut off (a server stop, a crash): steps are left, nothing "
        "awaits a decision and no run holds the thread. POST .../continue runs the rest; "
        "until then the status reads 'running'."
    )


class ThreadSummary(BaseModel):
    """A thread as `GET /api/v1/threads` lists it."""

    thread_id: str
    status: Literal["running", "interrupted", "done", "failed", "rejected"]
    question: str | None
    total_tokens: int
    total_cost: float
    created_at: str
    updated_at: str
    age_s: float = Field(description="Seconds since the thread last changed.")
    started_by: str | None = Field(
        description="The key (tenant/key id) that queued its first background run, else the "
        "tenant that owns it; null for a thread run with keys off."
    )


class PendingApproval(BaseModel):
    """A thread waiting for a person."""

    thread_id: str
    payload: dict[str, Any]
    waiting_since: str
    waiting_s: float
    deadline: str | None = Field(
        default=None, description="When the gate stops waiting (ISO time); null: never."
    )
    time_left_s: float | None = Field(
        default=None, description="Seconds to the deadline (0 once passed); null: none."
    )
    escalated: bool = Field(
        default=False, description="The deadline passed and escalated it: it waits, flagged."
    )
    escalation: str | None = Field(default=None, description="Why it was escalated.")


class ErrorBody(BaseModel):
    """Every error response."""

    error: str
    message: str
    detail: list[dict[str, Any]] | None = None
