"""The tool policy, enforced at call time: a call runs only if its tool exists, is granted to
the calling agent, has the approval its effect needs, and has arguments its schema takes;
it runs within the tool's timeout and its output is cut to the tool's cap."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.errors import ToolArgumentError, ToolFailedError, ToolRefusedError
from app.tools.registry import Effect, ToolSpec

TRUNCATED = "\n[output cut at {limit} characters]"


@dataclass(frozen=True)
class ToolPolicy:
    """Who may call what. `grants` maps an agent to the tools it may call; `approval_for`
    names the effects whose tools run only after a person approved the step."""

    grants: dict[str, frozenset[str]]
    approval_for: frozenset[Effect] = field(
        default_factory=lambda: frozenset({"write", "external"})
    )

    def needs_approval(self, spec: ToolSpec) -> bool:
        """Whether a step that may call this tool must be approved before it runs."""
        return spec.effect in self.approval_for

    def check(self, spec: ToolSpec | None, name: str, *, agent: str, approved: bool) -> ToolSpec:
        """Return the tool if the agent may call it now.

        Raises:
            ToolRefusedError: unknown, not granted, or waiting for an approval.
        """
        if spec is None:
            raise ToolRefusedError(f"there is no tool named {name!r}")
        if spec.name not in self.grants.get(agent, frozenset()):
            granted = ", ".join(sorted(self.grants.get(agent, ()))) or "none"
            raise ToolRefusedError(
                f"agent {agent!r} may not call {spec.name!r} (granted: {granted}); "
                "grant it in the manifest's agent entry"
            )
        if self.needs_approval(spec) and not approved:
            raise ToolRefusedError(
                f"{spec.name!r} has effect {spec.effect!r}: the step must be approved first"
            )
        return spec


def parse_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> Any:
    """Validate a call's arguments against the tool's schema.

    Raises:
        ToolArgumentError: naming each field that is wrong.
    """
    try:
        return spec.arguments.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        raise ToolArgumentError(f"{spec.name}: {problems}") from exc


async def run_tool(spec: ToolSpec, arguments: dict[str, Any]) -> str:
    """Run a checked call within the tool's timeout; cut its output to the tool's cap.

    Raises:
        ToolArgumentError: the arguments do not fit the tool's schema (or its domain).
        ToolFailedError: the tool ran past its timeout.
    """
    parsed = parse_arguments(spec, arguments)
    try:
        output = await asyncio.wait_for(spec.run(parsed), timeout=spec.timeout_s)
    except TimeoutError as exc:
        raise ToolFailedError(f"{spec.name} ran past its {spec.timeout_s:g} s timeout") from exc
    if len(output) > spec.max_output_chars:
        output = output[: spec.max_output_chars] + TRUNCATED.format(limit=spec.max_output_chars)
    return output
