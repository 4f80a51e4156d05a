"""Approval decisions and the plan-approval policy."""

from typing import Any

import pytest

from app.errors import InvalidDecisionError
from nodes.approval import needs_plan_approval, parse_decision
from nodes.context import Context
from nodes.plans import rule_plan


def edited_plan(*, cyclic: bool = False) -> dict[str, Any]:
    return {
        "goal": "edited",
        "steps": [
            {
                "id": "e1",
                "kind": "reasoning",
                "instruction": "first",
                "depends_on": [],
                "requires_approval": False,
            },
            {
                "id": "e2",
                "kind": "reasoning",
                "instruction": "second",
                "depends_on": ["e1", "e3"] if cyclic else ["e1"],
                "requires_approval": False,
            },
            {
                "id": "e3",
                "kind": "reasoning",
                "instruction": "third",
                "depends_on": ["e2"],
                "requires_approval": False,
            },
        ],
    }


class TestParseDecision:
    def test_approve(self) -> None:
        assert parse_decision({"decision": "approve"}, max_steps=8) == {
            "decision": "approve",
            "reason": None,
            "plan": None,
        }

    def test_reject_keeps_its_reason(self) -> None:
        decision = parse_decision({"decision": "reject", "reason": "too risky"}, max_steps=8)
        assert decision["reason"] == "too risky"

    @pytest.mark.parametrize("reason", [None, "", "   "])
    def test_reject_without_reason_gets_a_default(self, reason: str | None) -> None:
        raw: dict[str, Any] = {"decision": "reject"}
        if reason is not None:
            raw["reason"] = reason
        decision = parse_decision(raw, max_steps=8)
        assert decision["decision"] == "reject"
        assert decision["reason"] == "rejected without a reason"

    def test_edit_returns_the_validated_plan(self) -> None:
        decision = parse_decision({"decision": "edit", "plan": edited_plan()}, max_steps=8)
        assert decision["plan"] is not None
        assert [s["id"] for s in decision["plan"]["steps"]] == ["e1", "e2", "e3"]

    def test_edit_without_plan(self) -> None:
        with pytest.raises(InvalidDecisionError, match="needs a 'plan'"):
            parse_decision({"decision": "edit"}, max_steps=8)

    def test_edit_with_cyclic_plan(self) -> None:
        with pytest.raises(InvalidDecisionError, match="cycle"):
            parse_decision({"decision": "edit", "plan": edited_plan(cyclic=True)}, max_steps=8)

    def test_edit_with_too_large_plan(self) -> None:
        with pytest.raises(InvalidDecisionError, match="at most 2"):
            parse_decision({"decision": "edit", "plan": edited_plan()}, max_steps=2)

    def test_edit_with_misshapen_plan(self) -> None:
        with pytest.raises(InvalidDecisionError):
            parse_decision({"decision": "edit", "plan": {"goal": "g"}}, max_steps=8)

    @pytest.mark.parametrize(
        "raw", [{"decision": "maybe"}, {"reason": "no decision"}, "approve", None, 3]
    )
    def test_unknown_decision(self, raw: object) -> None:
        with pytest.raises(InvalidDecisionError, match="bad approval decision"):
            parse_decision(raw, max_steps=8)


class TestNeedsPlanApproval:
    safe = rule_plan("What is the capital of France?", max_steps=8)
    risky = rule_plan("- delete the logs\n- summarise them", max_steps=8)

    def test_never(self) -> None:
        context = Context(approval="never")
        assert not needs_plan_approval(self.safe, context)
        assert not needs_plan_approval(self.risky, context)

    def test_always(self) -> None:
        context = Context(approval="always")
        assert needs_plan_approval(self.safe, context)
        assert needs_plan_approval(self.risky, context)

    def test_when_required(self) -> None:
        context = Context(approval="when_required")
        assert not needs_plan_approval(self.safe, context)
        assert needs_plan_approval(self.risky, context)
