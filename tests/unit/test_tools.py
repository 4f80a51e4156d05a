"""The built-in calculator, the tool policy and the audit log's redaction, offline."""

import asyncio

import pytest
from pydantic import BaseModel

from app.errors import ToolArgumentError, ToolFailedError, ToolRefusedError
from app.tools.audit import REDACTED, redact
from app.tools.calculator import evaluate
from app.tools.policy import ToolPolicy, run_tool
from app.tools.registry import CALCULATOR, CalculatorArgs, ToolSpec, builtin_tools


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("17 * 23", 391),
        ("2 ** 10 - 1", 1023),
        ("(3 + 4) * -2", -14),
        ("7 // 2 + 7 % 2", 4),
        ("sqrt(16) + max(1, 2, 3)", 7.0),
        ("2^3", 8),
        ("6 × 7", 42),
        ("round(pi, 2)", 3.14),
    ],
)
def test_the_calculator_computes_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "(1).__class__",
        "[1, 2]",
        "x + 1",
        "9 ** 99999",
        "1 / 0",
        "sqrt(-1)",
        "True + 1",
        "",
        "1 +",
        "'a' * 3",
    ],
)
def test_the_calculator_refuses_anything_else(expression: str) -> None:
    with pytest.raises(ToolArgumentError):
        evaluate(expression)


def test_a_tool_runs_only_when_granted_and_approved_as_its_effect_needs() -> None:
    writer = ToolSpec(
        name="write_note",
        description="Write a note.",
        effect="write",
        arguments=CalculatorArgs,
        run=CALCULATOR.run,
    )
    policy = ToolPolicy(grants={"analyst": frozenset({"calculator", "write_note"})})
    assert policy.check(CALCULATOR, "calculator", agent="analyst", approved=False) is CALCULATOR
    with pytest.raises(ToolRefusedError, match="may not call 'calculator'"):
        policy.check(CALCULATOR, "calculator", agent="researcher", approved=True)
    with pytest.raises(ToolRefusedError, match="no tool named"):
        policy.check(None, "rm", agent="analyst", approved=True)
    with pytest.raises(ToolRefusedError, match="must be approved"):
        policy.check(writer, "write_note", agent="analyst", approved=False)
    assert policy.check(writer, "write_note", agent="analyst", approved=True) is writer
    relaxed = ToolPolicy(grants=policy.grants, approval_for=frozenset({"external"}))
    assert relaxed.check(writer, "write_note", agent="analyst", approved=False) is writer


def test_a_call_is_checked_against_its_schema_and_bounded() -> None:
    assert asyncio.run(run_tool(CALCULATOR, {"expression": "6 * 7"})) == "42"
    with pytest.raises(ToolArgumentError, match="expression: Field required"):
        asyncio.run(run_tool(CALCULATOR, {"expr": "6 * 7"}))

    class Noisy(BaseModel):
        pass

    async def shout(_: BaseModel) -> str:
        return "a" * 50

    async def hang(_: BaseModel) -> str:
        await asyncio.sleep(10)
        return ""

    noisy = ToolSpec("noisy", "", "read", Noisy, shout, max_output_chars=10)
    assert asyncio.run(run_tool(noisy, {})).startswith("a" * 10 + "\n[output cut at 10")
    slow = ToolSpec("slow", "", "read", Noisy, hang, timeout_s=0.05)
    with pytest.raises(ToolFailedError, match="timeout"):
        asyncio.run(run_tool(slow, {}))
    assert set(builtin_tools()) == {"calculator"}


def test_secrets_are_redacted_from_audited_arguments() -> None:
    arguments = {
        "url": "https://example.org/?q=1",
        "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "text/html"},
        "password": "hunter2",
        "note": "use sk-live_abcdefghijklmnop for it",
        "items": [{"token": "t"}, "Bearer abcdefghijklmnopq"],
    }
    assert redact(arguments) == {
        "url": "https://example.org/?q=1",
        "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "Accept": "text/html"},
        "password": REDACTED,
        "note": f"use {REDACTED} for it",
        "items": [{"token": REDACTED}, REDACTED],
    }


def test_the_local_grammar_leaves_out_bounds_it_would_nest_past_its_stack() -> None:
    from app.local_llm import grammar_schema
    from app.tools.files import WriteFileArgs

    schema = WriteFileArgs.model_json_schema()
    safe = grammar_schema(schema)
    assert "maxLength" not in safe["properties"]["content"]  # a million nested rules
    assert "pattern" not in safe["properties"]["path"]
    assert safe["properties"]["path"]["minLength"] == 1  # small bounds stay
    assert safe["required"] == ["path", "content"]
    named = {"properties": {"pattern": {"type": "string", "maxLength": 10}}}
    assert grammar_schema(named) == named  # a property called "pattern" is a name


def test_a_local_answer_cut_off_at_max_tokens_keeps_its_text_not_its_json() -> None:
    from langchain_core.messages import AIMessage

    from app.local_llm import _as_tool_call

    cut = _as_tool_call(AIMessage(content='{ "answer": "The fridge \\"cools\\" food by'))
    assert cut.content == 'The fridge "cools" food by'
    assert _as_tool_call(AIMessage(content='{"answer": "done"}')).content == "done"
    call = _as_tool_call(AIMessage(content='{"tool": "calculator", "arguments": {"x": 1}}'))
    assert call.tool_calls[0]["name"] == "calculator"
