"""The per-run context: frozen options a caller sets for one run (model, policy, limits)."""

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from app.errors import ConfigError
from app.settings import ApprovalPolicy, PlannerKind, Settings

Mode = Literal["auto", "direct", "plan"]
Synthesis = Literal["auto", "model", "compose"]
_COLLECTION = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_POLICIES = ("never", "always", "when_required")
_PLANNERS = ("rules", "llm")
_MODES = ("auto", "direct", "plan")
_SYNTHESES = ("auto", "model", "compose")


def _has_type(value: object, declared: object) -> bool:
    if value is None:
        return "None" in str(declared)  # an optional option left unset
    if declared is bool:
        return isinstance(value, bool)
    if declared is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)  # str and the Literal-typed options


@dataclass(frozen=True, kw_only=True)
class Context:
    """Options for one run. Every surface (CLI, HTTP, LangServe, Studio) sets the same names."""

    model: str = "local"
    """Chat model: 'local' or a provider string such as 'openai:gpt-4o-mini'."""
    approval: ApprovalPolicy = "when_required"
    """When to stop for a person: never, always, or when a step requires approval."""
    approve_final: bool = False
    """Also ask a person to approve the final answer."""
    planner: PlannerKind = "rules"
    """Rule-based planner, or the LLM planner (validated, falling back to the rules)."""
    mode: Mode = "auto"
    """Answer directly, plan, or let the orchestrator decide."""
    synthesis: Synthesis = "auto"
    """How parallel answers become one: the model writes a synthesis, or they are composed
    side by side; auto composes for the small local model and asks any other model."""
    max_replans: int = 2
    """How many times the critic may send the plan back."""
    token_budget: int = 20_000
    """Tokens the whole run may spend; the critic stops the run when they are spent."""
    max_steps: int = 8
    """Largest plan accepted."""
    max_output_tokens: int = 256
    """Largest answer one model call may write."""
    collection: str | None = None
    """Document collection to answer from: every step becomes a rag step over it."""
    documents: bool = True
    """With no collection named, turn the steps that match an ingested collection into rag
    steps (the step's closest chunk at least as similar as the settings' match threshold)."""

    def __post_init__(self) -> None:
        wrong = [
            f"{f.name} must be {f.type.__name__ if isinstance(f.type, type) else 'a str'}"
            for f in fields(self)
            if not _has_type(getattr(self, f.name), f.type)
        ]
        if wrong:
            raise ConfigError("bad run option: " + "; ".join(wrong))
        problems = []
        if self.approval not in _POLICIES:
            problems.append(f"approval must be one of {', '.join(_POLICIES)}")
        if self.planner not in _PLANNERS:
            problems.append(f"planner must be one of {', '.join(_PLANNERS)}")
        if self.mode not in _MODES:
            problems.append(f"mode must be one of {', '.join(_MODES)}")
        if self.synthesis not in _SYNTHESES:
            problems.append(f"synthesis must be one of {', '.join(_SYNTHESES)}")
        for name in ("max_replans",):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for name in ("token_budget", "max_steps", "max_output_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.collection is not None and not _COLLECTION.match(self.collection):
            problems.append("collection must be 1-40 lowercase letters, digits or underscores")
        if not self.model.strip():
            problems.append("model must not be empty")
        if problems:
            raise ConfigError("bad run option: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "Context":
        """Build a context from the process defaults, then apply the non-None overrides.

        Raises:
            ConfigError: an override names no option or has a bad value.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown run option(s): {', '.join(unknown)}")
        base = cls(
            model=settings.model,
            approval=settings.approval,
            planner=settings.planner,
            max_replans=settings.max_replans,
            token_budget=settings.token_budget,
            max_steps=settings.max_steps,
            max_output_tokens=settings.max_output_tokens,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
