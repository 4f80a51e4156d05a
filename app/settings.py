"""Process settings, read from the environment (and a `.env` file) in one place."""

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
import psycopg
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError
from app.model_routes import route_problems
from app.spans import FORMS, parse_span, parse_timeout

ApprovalPolicy = Literal["never", "always", "when_required"]
TimeoutAction = Literal["reject", "approve", "escalate"]
"""What an approval gate's deadline does when it passes (`approval_timeout_action`)."""
AuthMode = Literal["auto", "required", "off"]
PlannerKind = Literal["rules", "llm"]
LogFormat = Literal["text", "json"]


class ModelPrice(BaseModel):
    """Price of one model, in currency units per million tokens."""

    input_per_mtok: float = Field(ge=0, description="Price per million input tokens.")
    output_per_mtok: float = Field(ge=0, description="Price per million output tokens.")


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "local": ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0),
    "openai:gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
    "openai:gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
    "openai:gpt-4.1-mini": ModelPrice(input_per_mtok=0.40, output_per_mtok=1.60),
}


MAX_REPLANS = 10
"""The most replans a run may ask for: each replan is a whole round of steps."""
MAX_STEPS = 50
"""The largest plan a run may accept."""


class Settings(BaseSettings):
    """Everything the process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTGRAPH_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="Postgres URL; unset means the embedded Postgres in the data directory.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("agentgraph")),
        description="Where the embedded Postgres cluster and other local state live.",
    )
    model: str = Field(
        default="local",
        description="Chat model: 'local' (SmolLM2-135M via llama.cpp) or a provider string "
        "such as 'openai:gpt-4o-mini'.",
    )
    model_base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (vLLM, llama.cpp server, Ollama).",
    )
    model_api_key: str | None = Field(
        default=None, description="API key for the OpenAI-compatible server, if it needs one."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object: node role (planner, reasoning, rag, critic, synthesis) -> "
        "the chat model that answers for it; a role not listed uses the run's model.",
    )
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description='JSON object: node role, or "*" for every role, -> the chat models to try '
        "in order when the role's model errors, times out or is rate-limited.",
    )
    model_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a model call waits for its model's first or next streamed token "
        "(a structured or tool-calling call: for its whole answer) before it counts as failed "
        "and the next fallback is asked.",
    )
    embeddings: str = Field(
        default="local",
        description="Embedding model: 'local' (all-MiniLM-L6-v2) or a provider string.",
    )
    approval: ApprovalPolicy = Field(default="when_required", description="Default policy.")
    approval_timeout: str | None = Field(
        default=None,
        description="How long an approval gate waits for a person (30m, 2d, or seconds) "
        "before its deadline takes `approval_timeout_action`. Unset: it waits forever.",
    )
    approval_timeout_action: TimeoutAction = Field(
        default="reject",
        description="What a passed deadline does: reject (the run ends rejected, 'timed "
        "out'), approve (low-risk gates only; others escalate) or escalate (keep waiting, "
        "flagged in the inbox and the metrics).",
    )
    planner: PlannerKind = Field(default="rules", description="Default planner.")
    max_replans: int = Field(default=2, ge=0, le=MAX_REPLANS)
    token_budget: int = Field(default=20_000, ge=1)
    max_steps: int = Field(default=8, ge=1, le=MAX_STEPS)
    manifest: Path | None = Field(
        default=None,
        description="The manifest (agentgraph.yaml): agents, tools, MCP servers and policy; "
        "unset means the default manifest that ships.",
    )
    max_tool_calls: int = Field(
        default=4, ge=1, le=20, description="Tool calls one tool step may make."
    )
    step_timeout_s: float = Field(default=120.0, gt=0)
    step_attempts: int = Field(default=3, ge=1, le=10)
    max_output_tokens: int = Field(default=256, ge=16, le=8192)
    local_context_tokens: int = Field(default=4096, ge=512)
    local_threads: int | None = Field(default=None, ge=1)
    local_extra_buffers: bool = Field(
        default=False,
        description="Let llama.cpp put the local model's weights in its extra CPU buffer types "
        "(AMX, repacked layouts): faster on some CPUs, but decoding through them segfaults on "
        "Intel CPUs with AMX, so off by default.",
    )
    chunk_size: int = Field(default=1000, ge=100, le=20_000, description="Characters a chunk.")
    chunk_overlap: int = Field(default=150, ge=0, le=5_000, description="Characters shared.")
    collection: str = Field(default="default", description="Document collection by default.")
    match_threshold: float = Field(
        default=0.45,
        ge=0.0,
        le=1.0,
        description="Cosine similarity of a step to its best chunk that makes it a rag step.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    max_concurrent_runs: int = Field(
        default=10,
        ge=1,
        le=64,
        description="Runs a server process executes at once; later ones wait their turn.",
    )
    worker_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Background runs a queue worker (`agentgraph worker`, or a server's "
        "in-process worker) executes at once.",
    )
    serve_worker: bool = Field(
        default=True,
        description="Whether `agentgraph serve` also executes background runs in its own "
        "process(es). Off: only `agentgraph worker` processes execute them.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which `agentgraph worker` serves its Prometheus metrics "
        "(`/metrics`; the runs it executed). Unset: none.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address on which `agentgraph worker` serves its metrics.",
    )
    worker_heartbeat_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds between a queue worker's heartbeats (and its look for the runs "
        "of workers that died).",
    )
    worker_stalled_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds without a heartbeat after which a worker counts as dead and its "
        "runs are taken by another worker, from their last checkpoint.",
    )
    worker_timeout_s: float | None = Field(
        default=None,
        ge=0,
        description="Seconds a server process's event loop may be stuck before the process "
        "exits so that its manager starts another; `serve --workers` sets it for its workers "
        "(default 60). Unset or 0: never.",
    )
    checkpoint_ttl: timedelta | None = Field(
        default=None,
        description="Prune checkpoints older than this (30d, 12h, ...) that nothing needs: "
        "each thread's latest, the heads of its branches and its fork points stay. A server "
        "prunes hourly. Unset: keep every checkpoint.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis (redis://HOST:PORT/DB) to count API keys' request rates in, shared "
        "by every server that uses it. Unset: they are counted in Postgres.",
    )
    auth: AuthMode = Field(
        default="auto",
        description="API keys: 'required', 'off', or 'auto': off when `agentgraph serve` "
        "listens on a loopback address only, required otherwise (and for an app served by "
        "another ASGI server).",
    )
    db_prepared_statements: bool = Field(
        default=True,
        description="Prepare statements on each connection; false for PgBouncer before 1.21.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="JSON list of browser origins allowed to call the API (CORS), e.g. "
        '["https://smith.langchain.com"] for LangGraph Studio in the browser. Empty: none.',
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="JSON object: model name -> {input_per_mtok, output_per_mtok}.",
    )
    log_format: LogFormat = Field(
        default="text",
        description="Log lines: 'text' (human-readable) or 'json' (one object per line, with "
        "the run's thread_id and run_id on every line logged while it runs).",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OpenTelemetry collector to send traces to (OTLP over HTTP, e.g. "
        "http://localhost:4318). Unset: no traces leave the process.",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="The collector's full traces URL (e.g. http://localhost:4318/v1/traces), "
        "instead of OTEL_EXPORTER_OTLP_ENDPOINT.",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        try:
            psycopg.conninfo.conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            raise ValueError(
                "must be a postgresql:// URL or a libpq conninfo string "
                "(or unset, for the embedded Postgres)"
            ) from None
        if "://" in value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (or unset, for the embedded Postgres)")
        return value

    @field_validator("checkpoint_ttl", mode="before")
    @classmethod
    def _span(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                span = parse_span(value)
            except ConfigError:
                raise ValueError(f"give {FORMS}") from None
            if not span:
                raise ValueError("must be longer than 0")
            return span
        return value

    @field_validator("approval_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                parse_timeout(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            return value.strip()
        return value

    @field_validator("models", "fallbacks")
    @classmethod
    def _routes(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problems = route_problems(
            value if info.field_name == "models" else {},
            value if info.field_name == "fallbacks" else {},
        )
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("model", "embeddings")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


def _env_name(field: str) -> str:
    if field.isupper():  # already an alias such as DATABASE_URL
        return field
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return f"AGENTGRAPH_{field.upper()}"


def load_settings() -> Settings:
    """Read the settings, turning a validation failure into one message per bad variable.

    Raises:
        ConfigError: a variable has a value that cannot be used; the message names it.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{_env_name(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        ]
        raise ConfigError("bad setting: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process settings, read once."""
    return load_settings()
