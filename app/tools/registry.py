"""What a tool is: a name, what it does, its effect on the world, its argument schema and
its limits. The built-in tools are declared here; the worker node and the policy read them."""

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.tools.calculator import MAX_EXPRESSION_CHARS, evaluate

Effect = Literal["read", "write", "external"]
"""`read` changes nothing; `write` changes something the run owns or can reach (a file, a
record); `external` reaches outside the machine (the network, another service)."""

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_OUTPUT_CHARS = 4_000


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the policy and the worker see it."""

    name: str
    description: str
    effect: Effect
    arguments: type[BaseModel]
    run: Callable[[BaseModel], Awaitable[str]]
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    hint: re.Pattern[str] | None = None
    """Text of a request this tool answers: the rule planner's cue to make a tool step."""

    def json_schema(self) -> dict[str, Any]:
        """The arguments' JSON schema, as tool-calling models are given it."""
        return self.arguments.model_json_schema()


class CalculatorArgs(BaseModel):
    """Arguments of `calculator`."""

    expression: str = Field(
        description="An arithmetic expression, such as '17 * 23' or 'sqrt(2) / 3'.",
        min_length=1,
        max_length=MAX_EXPRESSION_CHARS,
        # Numbers, operators, brackets and the names of functions and constants: a grammar
        # made from the schema (the local model's) then ends the string where arithmetic does.
        pattern=r"^[0-9a-z .,+\-*/%^()×÷]+$",
    )


async def _calculate(args: BaseModel) -> str:
    assert isinstance(args, CalculatorArgs)
    value = await asyncio.to_thread(evaluate, args.expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluate an arithmetic expression exactly (numbers, + - * / // % **, "
    "sqrt, log, exp, sin, cos, tan, abs, round, min, max, pi, e).",
    effect="read",
    arguments=CalculatorArgs,
    run=_calculate,
    # Arithmetic written out: `17 * 23`, `2 ** 10`, `(3 + 4) / 2`.
    hint=re.compile(r"\d\s*(?:[-+*/×÷^%]|\*\*)\s*\(?\s*-?\d"),
)


def with_limits(spec: ToolSpec, *, timeout_s: float, max_output_chars: int) -> ToolSpec:
    """The tool with other limits."""
    return replace(spec, timeout_s=timeout_s, max_output_chars=max_output_chars)


def builtin_tools() -> dict[str, ToolSpec]:
    """The tools that need no settings, by name."""
    return {spec.name: spec for spec in (CALCULATOR,)}
