"""The per-run context: frozen options a caller sets for one run (model, policy, limits)."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any, Literal, get_args, get_origin

from app.errors import ConfigError
from app.model_routes import ModelRole, Route, resolve_route, route_problems
from app.settings import (
    MAX_REPLANS,
    MAX_STEPS,
    ApprovalPolicy,
    PlannerKind,
    Settings,
    TimeoutAction,
)
from app.spans import parse_timeout
from retrievers.names import COLLECTION_NAME_PATTERN

Mode = Literal["auto", "direct", "plan"]
Synthesis = Literal["auto", "model", "compose"]
Pattern = Literal["single", "committee", "supervisor"]
_CHOICES: dict[str, tuple[str, ...]] = {
    "approval": get_args(ApprovalPolicy),
    "approval_timeout_action": get_args(TimeoutAction),
    "planner": get_args(PlannerKind),
    "mode": get_args(Mode),
    "synthesis": get_args(Synthesis),
    "pattern": get_args(Pattern),
}
"""The options with a fixed set of values, read off their `Literal` types."""
_FROM_SETTINGS = (
    "model",
    "approval",
    "approval_timeout",
    "approval_timeout_action",
    "planner",
    "max_replans",
    "token_budget",
    "max_steps",
    "max_tool_calls",
    "max_output_tokens",
    "models",
    "fallbacks",
)
"""The options whose default is a process setting of the same name."""
_MERGED = ("models", "fallbacks")
"""Routing tables: a run's entries are laid over the settings' per role, not instead."""
SERVER_SET = ("budget_label",)
"""Fields of the context that the server sets (from an API key's budget), never a caller."""


def _setting_default(name: str) -> Any:
    """The declared default of a process setting: one default for a setting and its option."""
    return Settings.model_fields[name].default


def _type_name(declared: object) -> str:
    if get_origin(declared) is dict:
        return "an object"
    return declared.__name__ if isinstance(declared, type) else "a str"


def _has_type(value: object, declared: object) -> bool:
    if value is None:
        return "None" in str(declared)  # an optional option left unset
    if get_origin(declared) is dict:
        return isinstance(value, dict)  # its entries are checked by `route_problems`
    if declared is bool:
        return isinstance(value, bool)
    if declared is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)  # str and the Literal-typed options


@dataclass(frozen=True, kw_only=True)
class Context:
    """Options for one run. Every surface (CLI, HTTP, LangServe, Studio) sets the same names."""

    model: str = _setting_default("model")
    """Chat model: 'local' or a provider string such as 'openai:gpt-4o-mini'."""
    models: dict[str, str] = field(default_factory=dict, hash=False)
    """Chat model per node role (planner, reasoning, rag, critic, synthesis), over `model`."""
    fallbacks: dict[str, list[str]] = field(default_factory=dict, hash=False)
    """Chat models to try in order, per node role or "*" for every role, when the role's
    model errors, times out or is rate-limited (`app.model_routes`)."""
    # RUF009 cannot tell that these settings' defaults are plain strings, as immutable as any.
    approval: ApprovalPolicy = _setting_default("approval")  # noqa: RUF009
    """When to stop for a person: never, always, or when a step requires approval."""
    approval_timeout: str | None = _setting_default("approval_timeout")
    """How long an approval gate waits (30m, 2d, or whole seconds); None: forever."""
    approval_timeout_action: TimeoutAction = _setting_default("approval_timeout_action")  # noqa: RUF009
    """What the gate's deadline does when it passes: reject, approve (low-risk gates only;
    others escalate) or escalate (keep waiting, flagged)."""
    approve_final: bool = False
    """Also ask a person to approve the final answer."""
    planner: PlannerKind = _setting_default("planner")  # noqa: RUF009
    """Rule-based planner, or the LLM planner (validated, falling back to the rules)."""
    mode: Mode = "auto"
    """Answer directly, plan, or let the orchestrator decide."""
    synthesis: Synthesis = "auto"
    """How parallel answers become one: the model writes a synthesis, or they are composed
    side by side; auto composes for the small local model and asks any other model."""
    pattern: Pattern = "single"
    """Who answers a reasoning step: one agent; a committee of the manifest's agents answering
    in parallel with a judge picking the best answer; or a supervisor agent handing sub-tasks
    to the other agents until it answers."""
    max_replans: int = _setting_default("max_replans")
    """How many times the critic may send the plan back."""
    token_budget: int = _setting_default("token_budget")
    """Tokens the whole run may spend; the critic stops the run when they are spent."""
    budget_label: str = "token budget"
    """What the token budget is, as the run's report names it when it is spent (a run whose
    budget an API key's daily budget set says so)."""
    max_steps: int = _setting_default("max_steps")
    """Largest plan accepted."""
    max_tool_calls: int = _setting_default("max_tool_calls")
    """Tool calls one tool step may make before it answers from what it has."""
    max_output_tokens: int = _setting_default("max_output_tokens")
    """Largest answer one model call may write."""
    collection: str | None = None
    """Document collection to answer from: every step becomes a rag step over it."""
    documents: bool = True
    """With no collection named, turn the steps that match an ingested collection into rag
    steps (the step's closest chunk at least as similar as the settings' match threshold)."""

    def __post_init__(self) -> None:
        wrong = [
            f"{f.name} must be {_type_name(f.type)}"
            for f in fields(self)
            if not _has_type(getattr(self, f.name), f.type)
        ]
        if wrong:
            raise ConfigError("bad run option: " + "; ".join(wrong))
        problems = [
            f"{name} must be one of {', '.join(choices)}"
            for name, choices in _CHOICES.items()
            if getattr(self, name) not in choices
        ]
        for name in ("max_replans",):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for name, most in (("max_replans", MAX_REPLANS), ("max_steps", MAX_STEPS)):
            if getattr(self, name) > most:
                problems.append(f"{name} must be <= {most}")
        for name in ("token_budget", "max_steps", "max_tool_calls", "max_output_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.collection is not None and not re.fullmatch(
            COLLECTION_NAME_PATTERN, self.collection
        ):
            problems.append("collection must be 1-40 lowercase letters, digits or underscores")
        if not self.model.strip():
            problems.append("model must not be empty")
        problems.extend(route_problems(self.models, self.fallbacks))
        if self.approval_timeout is not None:
            try:
                parse_timeout(self.approval_timeout, what="approval_timeout")
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("bad run option: " + "; ".join(problems))

    @property
    def approval_wait(self) -> timedelta | None:
        """How long an approval gate waits for a person (`approval_timeout`); None: forever."""
        if self.approval_timeout is None:
            return None
        return parse_timeout(self.approval_timeout, what="approval_timeout")

    def route(
        self,
        role: ModelRole,
        *,
        agent_model: str | None = None,
        agent_fallbacks: list[str] | None = None,
    ) -> Route:
        """The models a call for `role` tries, in order (see `app.model_routes`); a manifest
        agent's own model and fallbacks come first."""
        return resolve_route(
            role,
            model=self.model,
            models=self.models,
            fallbacks=self.fallbacks,
            agent_model=agent_model,
            agent_fallbacks=agent_fallbacks or (),
        )

    @classmethod
    def from_record(cls, options: Mapping[str, object]) -> "Context":
        """Rebuild the context a run recorded in its state (`State.options`); names that are
        no option (any more) are left out, so a thread of an older release still reads.

        The graph's edges read it there rather than from the runtime: LangGraph also runs
        them outside a run, where there is no runtime (a fork's `update_state`).

        Raises:
            ConfigError: a recorded option has a bad value.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in known})  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "Context":
        """Build a context from the process defaults, then apply the non-None overrides; the
        routing tables (`models`, `fallbacks`) of the overrides are laid over the settings'
        per role.

        Raises:
            ConfigError: an override names no option or has a bad value.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown run option(s): {', '.join(unknown)}")
        base = cls(**{name: getattr(settings, name) for name in _FROM_SETTINGS})
        given = {k: v for k, v in overrides.items() if v is not None}
        for name in _MERGED:
            if isinstance(given.get(name), Mapping):
                given[name] = {**getattr(base, name), **given[name]}
        return replace(base, **given)
