"""Model routing: which chat model answers for each node role, and the ordered fallbacks
tried when it errors, times out or is rate-limited.

A route is resolved most specific first: a manifest agent's own model, then the role's
model (`models`), then the run's `model`. Fallbacks likewise: the agent's own, then the
role's (`fallbacks[role]`), then everyone's (`fallbacks["*"]`). The calls themselves, and
how a fallback is taken, live in `nodes.llm`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NotRequired, get_args

from typing_extensions import TypedDict

ModelRole = Literal["planner", "reasoning", "rag", "critic", "synthesis"]
"""Node roles that call a chat model. `critic` is the model that judges answers (the
committee's judge); the critic node itself scores by rule."""
MODEL_ROLES: tuple[ModelRole, ...] = get_args(ModelRole)
ANY_ROLE = "*"
"""The `fallbacks` key that applies to every role without fallbacks of its own."""
MAX_FALLBACKS = 4
"""The most fallbacks one route may list: each is another call a failing step waits for."""
MAX_SPEC_CHARS = 200

FallbackReason = Literal["error", "timeout", "rate_limited"]


class _Failure(TypedDict):
    """What failed: the model, why, and how."""

    model: str
    """The model that failed."""
    reason: FallbackReason
    """Why: it raised an error, gave no answer within the model timeout, or was
    rate-limited (HTTP 429)."""
    error: str
    """The failure, in one line."""


class ModelFallback(_Failure):
    """A model that failed a call, so that the next model of its route was asked."""

    answered_by: NotRequired[str]
    """The model that answered instead, when it is not the one the call's usage record names
    (a supervisor's worker, whose step is recorded under the supervisor's model)."""


class FallbackTaken(_Failure):
    """A fallback as the run report lists it: where it happened and who answered instead."""

    node: str
    step_id: str | None
    answered_by: str | None
    """The model that answered in the end (None when every model of the route failed)."""


@dataclass(frozen=True)
class Route:
    """The models one call tries, in order."""

    primary: str
    fallbacks: tuple[str, ...] = ()

    @property
    def chain(self) -> tuple[str, ...]:
        """The primary, then each fallback."""
        return (self.primary, *self.fallbacks)


def _spec_problem(where: str, spec: object) -> str | None:
    if not isinstance(spec, str) or not spec.strip():
        return f"{where} must be a non-empty model spec"
    if len(spec) > MAX_SPEC_CHARS:
        return f"{where} must be at most {MAX_SPEC_CHARS} characters"
    return None


def route_problems(models: Mapping[str, object], fallbacks: Mapping[str, object]) -> list[str]:
    """Say what is wrong with a routing table (`models`: role -> spec; `fallbacks`: role or
    "*" -> list of specs); an empty list when nothing is."""
    roles = ", ".join(MODEL_ROLES)
    problems: list[str] = []
    for role, spec in models.items():
        if role not in MODEL_ROLES:
            problems.append(f"models: unknown role {role!r} (roles: {roles})")
        elif (problem := _spec_problem(f"models.{role}", spec)) is not None:
            problems.append(problem)
    for role, specs in fallbacks.items():
        if role != ANY_ROLE and role not in MODEL_ROLES:
            problems.append(f"fallbacks: unknown role {role!r} (roles: {roles}, or {ANY_ROLE})")
        elif not isinstance(specs, list):
            problems.append(f"fallbacks.{role} must be a list of model specs")
        elif len(specs) > MAX_FALLBACKS:
            problems.append(f"fallbacks.{role} may list at most {MAX_FALLBACKS} models")
        else:
            problems.extend(
                p
                for i, spec in enumerate(specs)
                if (p := _spec_problem(f"fallbacks.{role}[{i}]", spec)) is not None
            )
    return problems


def resolve_route(
    role: ModelRole,
    *,
    model: str,
    models: Mapping[str, str],
    fallbacks: Mapping[str, Sequence[str]],
    agent_model: str | None = None,
    agent_fallbacks: Sequence[str] = (),
) -> Route:
    """Return the route of `role`: the agent's model, else the role's, else the run's
    `model`; then the agent's fallbacks, else the role's, else everyone's (`"*"`), each
    model once and never the primary again."""
    primary = agent_model or models.get(role) or model
    listed = agent_fallbacks or fallbacks.get(role) or fallbacks.get(ANY_ROLE) or ()
    chain: list[str] = []
    for spec in listed:
        if spec != primary and spec not in chain:
            chain.append(spec)
    return Route(primary=primary, fallbacks=tuple(chain))
