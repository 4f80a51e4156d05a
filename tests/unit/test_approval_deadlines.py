"""Approval deadlines: the options and their errors, the low-risk rule, the payload's terms."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from app.errors import ConfigError
from app.settings import Settings, load_settings
from app.spans import parse_timeout
from graphs.deadlines import escalation_reason, terms_of
from nodes.approval import is_low_risk, timeout_action, with_deadline
from nodes.context import Context
from nodes.plans import Roster
from nodes.schemas import ApprovalRequest, Plan, Step
from server.schemas import RunOptions

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def step(step_id: str, *, flagged: bool = False, tools: list[str] | None = None) -> Step:
    made = Step(
        id=step_id,
        kind="tool" if tools else "reasoning",
        instruction=f"do {step_id}",
        depends_on=[],
        requires_approval=flagged,
    )
    if tools:
        made["tools"] = tools
    return made


def request(plan: Plan) -> ApprovalRequest:
    return ApprovalRequest(
        gate="plan",
        thread_id="t",
        reason="policy",
        risk="none",
        plan=plan,
        answer=None,
        error=None,
        resume={},
    )


class TestTimeoutOption:
    @pytest.mark.parametrize(
        ("text", "seconds"), [("90", 90), ("2s", 2), ("30m", 1800), (" 2d ", 172_800)]
    )
    def test_spans_and_seconds_are_read(self, text: str, seconds: int) -> None:
        assert parse_timeout(text) == timedelta(seconds=seconds)

    @pytest.mark.parametrize("text", ["0", "0s", "soon", "1.5h", "-5", ""])
    def test_anything_else_is_refused_with_the_forms(self, text: str) -> None:
        with pytest.raises(ConfigError, match="bad timeout"):
            parse_timeout(text)

    def test_a_run_option_is_checked_and_read(self) -> None:
        context = Context.from_settings(Settings(), approval_timeout="30m")
        assert context.approval_wait == timedelta(minutes=30)
        assert context.approval_timeout_action == "reject"  # the setting's default
        assert Context.from_settings(Settings()).approval_wait is None  # none by default
        with pytest.raises(ConfigError, match="bad approval_timeout 'soon'"):
            Context.from_settings(Settings(), approval_timeout="soon")
        with pytest.raises(ConfigError, match="approval_timeout_action must be one of"):
            Context.from_settings(Settings(), approval_timeout_action="ignore")

    def test_the_settings_are_the_defaults_of_the_options(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AGENTGRAPH_APPROVAL_TIMEOUT", "2d")
        monkeypatch.setenv("AGENTGRAPH_APPROVAL_TIMEOUT_ACTION", "escalate")
        context = Context.from_settings(load_settings())
        assert context.approval_wait == timedelta(days=2)
        assert context.approval_timeout_action == "escalate"
        # A run option still wins over the setting.
        assert Context.from_settings(load_settings(), approval_timeout="5s").approval_wait == (
            timedelta(seconds=5)
        )

    def test_bad_settings_name_their_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGENTGRAPH_APPROVAL_TIMEOUT", "tomorrow")
        monkeypatch.setenv("AGENTGRAPH_APPROVAL_TIMEOUT_ACTION", "ignore")
        with pytest.raises(ConfigError) as caught:
            load_settings()
        message = str(caught.value)
        assert "AGENTGRAPH_APPROVAL_TIMEOUT: " in message
        assert "AGENTGRAPH_APPROVAL_TIMEOUT_ACTION: " in message

    def test_an_empty_setting_means_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGENTGRAPH_APPROVAL_TIMEOUT", "")
        assert load_settings().approval_timeout is None

    def test_the_http_options_take_seconds_or_a_span(self) -> None:
        assert RunOptions(approval_timeout=90).overrides() == {"approval_timeout": "90"}  # type: ignore[arg-type]
        assert RunOptions(approval_timeout="2d").overrides() == {"approval_timeout": "2d"}
        with pytest.raises(ValidationError, match="bad approval_timeout"):
            RunOptions(approval_timeout="0s")
        with pytest.raises(ValidationError):
            RunOptions(approval_timeout_action="ignore")  # type: ignore[arg-type]


class TestLowRisk:
    def test_a_plan_without_flagged_steps_or_gated_tools_is_low_risk(self) -> None:
        plan = Plan(goal="g", steps=[step("a"), step("b", tools=["calculator"])])
        assert is_low_risk(plan, Roster(grants={}, gated=frozenset({"http_post"})))
        assert is_low_risk(plan)

    def test_a_flagged_step_makes_it_high_risk(self) -> None:
        assert not is_low_risk(Plan(goal="g", steps=[step("a"), step("b", flagged=True)]))

    def test_a_step_that_may_call_a_gated_tool_makes_it_high_risk(self) -> None:
        plan = Plan(goal="g", steps=[step("a", tools=["http_post"])])
        assert not is_low_risk(plan, Roster(grants={}, gated=frozenset({"http_post"})))

    @pytest.mark.parametrize(
        ("action", "low_risk", "taken"),
        [
            ("approve", True, "approve"),
            ("approve", False, "escalate"),
            ("reject", False, "reject"),
            ("escalate", True, "escalate"),
        ],
    )
    def test_only_a_low_risk_gate_is_approved_by_its_deadline(
        self, action: Any, low_risk: bool, taken: str
    ) -> None:
        assert timeout_action(action, low_risk=low_risk) == taken


class TestPayload:
    def test_without_a_timeout_the_gate_has_no_deadline(self) -> None:
        payload = with_deadline(request(Plan(goal="g", steps=[step("a")])), Context())
        assert payload["deadline"] is None
        assert payload["on_timeout"] is None
        assert terms_of(payload) is None

    def test_the_deadline_and_action_are_stored_in_the_payload(self) -> None:
        context = Context(approval_timeout="90", approval_timeout_action="approve")
        payload = with_deadline(request(Plan(goal="g", steps=[step("a")])), context, now=NOW)
        assert payload["deadline"] == (NOW + timedelta(seconds=90)).isoformat(
            timespec="milliseconds"
        )
        assert payload["on_timeout"] == "approve"
        terms = terms_of(dict(payload))
        assert terms is not None
        assert (terms.deadline, terms.action, terms.low_risk) == (
            NOW + timedelta(seconds=90),
            "approve",
            True,
        )

    def test_a_high_risk_gate_asked_to_approve_escalates_and_says_why(self) -> None:
        context = Context(approval_timeout="1m", approval_timeout_action="approve")
        plan = Plan(goal="g", steps=[step("a", flagged=True)])
        payload = with_deadline(request(plan), context, now=NOW)
        assert payload["on_timeout"] == "escalate"
        assert payload["low_risk"] is False
        terms = terms_of(dict(payload))
        assert terms is not None
        assert "not low-risk" in escalation_reason(terms)

    @pytest.mark.parametrize(
        "payload",
        [
            None,
            "text",
            {"deadline": "not a time", "on_timeout": "reject"},
            {"deadline": NOW.isoformat(), "on_timeout": "ignore"},
            {"deadline": NOW.isoformat()},
        ],
    )
    def test_a_payload_without_valid_terms_has_none(self, payload: object) -> None:
        assert terms_of(payload) is None
