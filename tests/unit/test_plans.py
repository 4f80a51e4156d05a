"""Plan validation, the rule planner and the rule-based patch after a critique."""

from typing import Any

import pytest

from app.errors import PlanValidationError
from nodes.plans import (
    KNOWN_KINDS,
    direct_plan,
    patch_plan,
    rule_plan,
    split_request,
    validate_plan,
    wants_plan,
)
from nodes.schemas import Critique, Plan, StepResult, StepUsage


def step(
    step_id: str,
    depends_on: list[str] | None = None,
    *,
    kind: str = "reasoning",
    instruction: str | None = None,
    requires_approval: bool = False,
) -> dict[str, Any]:
    return {
        "id": step_id,
        "kind": kind,
        "instruction": instruction or f"do {step_id}",
        "depends_on": depends_on or [],
        "requires_approval": requires_approval,
    }


def plan_of(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"goal": "g", "steps": list(steps)}


def problems_of(raw: object, *, max_steps: int = 8) -> list[str]:
    with pytest.raises(PlanValidationError) as info:
        validate_plan(raw, known_kinds=KNOWN_KINDS, max_steps=max_steps)
    return info.value.problems


class TestValidatePlan:
    def test_accepts_a_dag_and_returns_it(self) -> None:
        raw = plan_of(step("a"), step("b"), step("c", ["a", "b"]), step("d", ["c", "a"]))
        plan = validate_plan(raw, known_kinds=KNOWN_KINDS, max_steps=8)
        assert plan == raw
        assert [s["id"] for s in plan["steps"]] == ["a", "b", "c", "d"]
        assert plan["steps"][3]["depends_on"] == ["c", "a"]

    def test_cycle(self) -> None:
        # "a" is an entry step, so only the cycle b -> c -> b is wrong.
        problems = problems_of(plan_of(step("a"), step("b", ["a", "c"]), step("c", ["b"])))
        assert problems == ["the dependencies form a cycle"]

    def test_unknown_dependency(self) -> None:
        problems = problems_of(plan_of(step("a"), step("b", ["zz"])))
        assert problems == ["step b depends on unknown step 'zz'"]

    def test_self_dependency(self) -> None:
        problems = problems_of(plan_of(step("a"), step("b", ["b"])))
        assert problems == ["step b depends on itself"]

    def test_unknown_kind(self) -> None:
        problems = problems_of(plan_of(step("a", kind="telepathy")))
        assert len(problems) == 1
        assert "unknown kind 'telepathy'" in problems[0]
        assert "reasoning" in problems[0]

    def test_known_kinds_is_a_parameter(self) -> None:
        raw = plan_of(step("a", kind="tools"))
        # not known by default
        assert problems_of(raw) == ["step a: unknown kind 'tools' (known: rag, reasoning, tool)"]
        plan = validate_plan(raw, known_kinds={*KNOWN_KINDS, "tools"}, max_steps=8)
        assert plan == raw
        assert plan["steps"][0]["kind"] == "tools"
        # the parameter replaces the default kinds rather than adding to them
        with pytest.raises(PlanValidationError) as info:
            validate_plan(plan_of(step("a")), known_kinds={"tools"}, max_steps=8)
        assert info.value.problems == ["step a: unknown kind 'reasoning' (known: tools)"]

    def test_rag_is_a_known_kind(self) -> None:
        plan = validate_plan(plan_of(step("a", kind="rag")), known_kinds=KNOWN_KINDS, max_steps=8)
        assert plan["steps"][0]["kind"] == "rag"

    def test_duplicate_ids(self) -> None:
        problems = problems_of(plan_of(step("a"), step("a"), step("b")))
        assert problems == ["duplicate step ids: a"]

    def test_no_entry_step(self) -> None:
        problems = problems_of(plan_of(step("a", ["b"]), step("b", ["a"])))
        assert "no entry step: every step depends on another" in problems

    def test_empty_plan(self) -> None:
        assert problems_of(plan_of()) == ["the plan has no steps"]

    def test_too_many_steps(self) -> None:
        raw = plan_of(*(step(f"s{i}") for i in range(1, 5)))
        assert problems_of(raw, max_steps=3) == ["the plan has 4 steps; at most 3 are allowed"]
        assert validate_plan(raw, known_kinds=KNOWN_KINDS, max_steps=4) == raw

    def test_missing_field(self) -> None:
        bad = step("a")
        del bad["instruction"]
        problems = problems_of(plan_of(bad))
        assert len(problems) == 1
        assert problems[0].startswith("steps.0.instruction")

    @pytest.mark.parametrize("raw", [None, "a plan", [], {"steps": []}])
    def test_not_a_plan(self, raw: object) -> None:
        assert problems_of(raw)

    def test_reports_every_problem(self) -> None:
        problems = problems_of(plan_of(step("a", ["a"], kind="x"), step("a", ["q"])))
        assert len(problems) == 5  # duplicate, kind, self, unknown dep, no entry


class TestSplitRequest:
    def test_bullets_become_one_parallel_stage(self) -> None:
        request = "Tell me about:\n- cats\n* dogs\n3. birds"
        assert split_request(request) == [["cats", "dogs", "birds"]]

    def test_then_makes_ordered_stages(self) -> None:
        assert split_request("find the capital of France then describe its history") == [
            ["find the capital of France"],
            ["describe its history"],
        ]
        assert split_request("collect data, and then summarise it.") == [
            ["collect data"],
            ["summarise it"],
        ]
        assert split_request("collect data; summarise it; translate it") == [
            ["collect data"],
            ["summarise it"],
            ["translate it"],
        ]

    def test_semicolon_and_then_is_one_separator(self) -> None:
        assert split_request("collect data; and then summarise it.") == [
            ["collect data"],
            ["summarise it"],
        ]

    def test_separate_questions_are_parallel(self) -> None:
        assert split_request("What is A? What is B?") == [["What is A?", "What is B?"]]

    def test_one_question_is_one_part(self) -> None:
        assert split_request("  What is the capital of France?  ") == [
            ["What is the capital of France?"]
        ]

    def test_wants_plan(self) -> None:
        assert not wants_plan("What is the capital of France?")
        assert wants_plan("What is A? What is B?")
        assert wants_plan("Compare Rust with Go")


class TestRulePlan:
    def test_bullets_become_parallel_steps(self) -> None:
        plan = rule_plan("- cats\n- dogs\n- birds", max_steps=8)
        assert [(s["id"], s["depends_on"]) for s in plan["steps"]] == [
            ("s1", []),
            ("s2", []),
            ("s3", []),
        ]
        assert [s["instruction"] for s in plan["steps"]] == ["cats", "dogs", "birds"]

    def test_then_becomes_dependent_stages(self) -> None:
        plan = rule_plan("gather the facts then write a summary then translate it", max_steps=8)
        assert [(s["id"], s["depends_on"]) for s in plan["steps"]] == [
            ("s1", []),
            ("s2", ["s1"]),
            ("s3", ["s2"]),
        ]

    def test_one_question_becomes_gather_then_answer(self) -> None:
        request = "What is the capital of France?"
        plan = rule_plan(request, max_steps=8)
        assert plan["goal"] == request
        assert [(s["id"], s["depends_on"]) for s in plan["steps"]] == [("s1", []), ("s2", ["s1"])]
        assert all(request in s["instruction"] for s in plan["steps"])
        assert validate_plan(plan, known_kinds=KNOWN_KINDS, max_steps=8) == plan

    @pytest.mark.parametrize(
        "request_text",
        ["delete the old backups", "send email to the team", "deploy the service"],
    )
    def test_risky_words_require_approval(self, request_text: str) -> None:
        plan = rule_plan(f"- {request_text}\n- say hello", max_steps=8)
        assert [s["requires_approval"] for s in plan["steps"]] == [True, False]

    def test_harmless_request_needs_no_approval(self) -> None:
        plan = rule_plan("What is the capital of France?", max_steps=8)
        assert not any(s["requires_approval"] for s in plan["steps"])
        assert direct_plan("deploy it")["steps"][0]["requires_approval"]

    def test_truncated_to_max_steps(self) -> None:
        plan = rule_plan("- a1\n- a2\n- a3\n- a4", max_steps=2)
        assert [s["id"] for s in plan["steps"]] == ["s1", "s2"]

    def test_truncated_stages_keep_valid_dependencies(self) -> None:
        plan = rule_plan("A; B; C; D", max_steps=2)
        assert validate_plan(plan, known_kinds=KNOWN_KINDS, max_steps=2) == plan


def result(step_id: str, status: str, error: str | None = None) -> StepResult:
    return StepResult(
        step_id=step_id,
        kind="reasoning",
        status=status,  # type: ignore[typeddict-item]
        output="out" if status == "done" else "",
        citations=[],
        usage=StepUsage(input_tokens=0, output_tokens=0, cost=0.0),
        attempts=1,
        latency_ms=1.0,
        error=error,
    )


def critique(failed: list[str]) -> Critique:
    return Critique(
        verdict="replan",
        reason="steps failed",
        feedback="Keep it short.",
        coverage=0.0,
        grounding=None,
        failed_steps=failed,
        tokens_used=0,
        budget_exhausted=False,
    )


class TestPatchPlan:
    def three_steps(self) -> Plan:
        return validate_plan(
            plan_of(
                step("s1", instruction="first"),
                step("s2", ["s1"], instruction="second"),
                step("s3", ["s2"], instruction="third"),
            ),
            known_kinds=KNOWN_KINDS,
            max_steps=8,
        )

    def test_renames_failed_steps_and_rewires_dependents(self) -> None:
        results = {"s1": result("s1", "done"), "s2": result("s2", "failed", "boom")}
        patched = patch_plan(self.three_steps(), critique(["s2"]), results, version=2)
        assert [(s["id"], s["depends_on"]) for s in patched["steps"]] == [
            ("s1", []),
            ("s2-r2", ["s1"]),
            ("s3", ["s2-r2"]),
        ]
        assert patched["steps"][0]["instruction"] == "first"  # done step kept as it was
        retried = patched["steps"][1]["instruction"]
        assert retried.startswith("second\n(Retry:")
        assert "boom" in retried  # the step's own error is preferred to the critique reason
        assert "Keep it short." in retried
        assert validate_plan(patched, known_kinds=KNOWN_KINDS, max_steps=8) == patched

    def test_uses_the_critique_reason_without_a_step_error(self) -> None:
        patched = patch_plan(self.three_steps(), critique(["s3"]), {}, version=2)
        assert "steps failed" in patched["steps"][2]["instruction"]

    def test_repeated_patches_do_not_stack_retry_notes(self) -> None:
        first = patch_plan(
            self.three_steps(), critique(["s2"]), {"s2": result("s2", "failed", "e1")}, version=2
        )
        second = patch_plan(
            first, critique(["s2-r2"]), {"s2-r2": result("s2-r2", "failed", "e2")}, version=3
        )
        ids = [s["id"] for s in second["steps"]]
        assert ids == ["s1", "s2-r3", "s3"]
        assert second["steps"][2]["depends_on"] == ["s2-r3"]
        instruction = second["steps"][1]["instruction"]
        assert instruction.count("(Retry:") == 1
        assert "e2" in instruction
        assert "e1" not in instruction
        assert instruction.startswith("second\n")

    def test_ids_containing_dash_r_stay_distinct(self) -> None:
        plan = validate_plan(
            plan_of(step("draft-review"), step("draft-rewrite")),
            known_kinds=KNOWN_KINDS,
            max_steps=8,
        )
        patched = patch_plan(plan, critique(["draft-review", "draft-rewrite"]), {}, version=2)
        # "-review" and "-rewrite" are not retry suffixes: each id keeps its own base
        assert [s["id"] for s in patched["steps"]] == ["draft-review-r2", "draft-rewrite-r2"]
        assert validate_plan(patched, known_kinds=KNOWN_KINDS, max_steps=8) == patched

    def test_keeps_goal_kind_and_approval_flag(self) -> None:
        plan = validate_plan(
            plan_of(step("s1", requires_approval=True)), known_kinds=KNOWN_KINDS, max_steps=8
        )
        patched = patch_plan(plan, critique(["s1"]), {}, version=4)
        assert patched["goal"] == "g"
        assert patched["steps"][0]["id"] == "s1-r4"
        assert patched["steps"][0]["requires_approval"] is True
        assert patched["steps"][0]["kind"] == "reasoning"


def test_each_problem_of_a_plan_says_where_it_is() -> None:
    plan = {
        "goal": "g",
        "steps": [step("s1"), step("s2", ["s9"], kind="magic"), step("s2"), step("s3", ["s3"])],
    }
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(plan, known_kinds=KNOWN_KINDS, max_steps=10)
    assert caught.value.located() == [
        (("steps", 2, "id"), "duplicate step ids: s2"),
        (("steps", 1, "kind"), "step s2: unknown kind 'magic' (known: rag, reasoning, tool)"),
        (("steps", 1, "depends_on"), "step s2 depends on unknown step 's9'"),
        (("steps", 3, "depends_on"), "step s3 depends on itself"),
    ]
    assert caught.value.detail == [
        {"loc": list(where), "msg": msg} for where, msg in caught.value.located()
    ]

    empty = {"goal": "g", "steps": [{**step("s1"), "instruction": ""}]}
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(empty, known_kinds=KNOWN_KINDS, max_steps=10)
    [(where, _)] = caught.value.located()
    assert where == ("steps", 0, "instruction")
