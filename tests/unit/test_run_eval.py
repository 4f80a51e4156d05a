"""Scoring a run's answer, and reading an evaluation dataset (`graphs.run_eval`)."""

import json
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from app.errors import ConfigError
from cli.evaluate import markdown_report, parse_options
from graphs.eval_scoring import correctness, judge, match_fact, quote_found, token_f1
from graphs.run_eval import CaseResult, load_cases, summarize


def test_a_fact_is_found_exactly_fuzzily_or_not_at_all() -> None:
    answer = "Vitamin D deficiency raises the risk of fractures in older adults [c1]."
    assert match_fact("risk of fractures", answer).how == "exact"
    fuzzy = match_fact("fracture risk is raised", answer)
    assert fuzzy.found
    assert fuzzy.how.startswith("fuzzy")
    assert not match_fact("lowers blood pressure", answer).found
    assert not match_fact("", answer).found


def test_correctness_counts_facts_else_compares_with_the_reference() -> None:
    score, matches = correctness("A is 1 and B is 2.", facts=["a is 1", "c is 3"], reference=None)
    assert score == 0.5
    assert [m.found for m in matches] == [True, False]
    score, matches = correctness("Paris is the capital.", facts=[], reference="Paris")
    assert matches == []
    assert score is not None
    assert 0 < score < 1
    assert correctness("anything", facts=[], reference=None) == (None, [])
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("dogs bark", "cats purr") == 0.0


async def test_a_judge_says_yes_or_no_and_anything_else_is_no_verdict() -> None:
    async def verdict(reply: str) -> bool | None:
        model = FakeListChatModel(responses=[reply])
        return await judge(model, question="q", answer="a", facts=["f"], reference=None)

    assert await verdict("Yes.") is True
    assert await verdict("no, it does not") is False
    assert await verdict("Maybe") is None
    model = FakeListChatModel(responses=["yes"])
    assert await judge(model, question="q", answer="a", facts=[], reference=None) is None


def test_a_quote_is_valid_only_if_the_chunk_holds_it() -> None:
    chunk = "Title. The first sentence, with a comma. The second one!"
    assert quote_found("the first sentence with a comma", chunk)
    assert not quote_found("a sentence never written", chunk)
    assert not quote_found("", chunk)


def _write(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_cases_are_read_with_their_documents_relative_to_the_dataset(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"id": "a", "question": "Q?", "facts": ["x"], "collection": "c", "documents": "d.jsonl"},
        "",
        {"question": "R?", "reference": "r", "options": {"planner": "rules"}},
    )
    first, second = load_cases(path)
    assert first.case_id == "a"
    assert first.documents == tmp_path / "d.jsonl"
    assert second.case_id == "line-3"  # named by its line
    assert second.options == {"planner": "rules"}
    assert len(load_cases(path, limit=1)) == 1


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("{not json", ":1: not JSON"),
        ({"facts": ["x"]}, "'question' must be a non-empty string"),
        ({"question": "Q", "facts": "x"}, "'facts' must be a list of strings"),
        ({"question": "Q", "colour": 1}, "unknown field(s) colour"),
        ({"question": "Q", "documents": "d"}, "needs a 'collection'"),
        ({"question": "Q", "options": []}, "'options' must be an object"),
    ],
)
def test_a_bad_case_is_refused_with_its_line(tmp_path: Path, row: object, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_cases(_write(tmp_path, row))
    assert says in str(caught.value)


def test_an_empty_dataset_and_repeated_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no case"):
        load_cases(_write(tmp_path, ""))
    with pytest.raises(ConfigError, match="used twice: a"):
        load_cases(_write(tmp_path, {"id": "a", "question": "Q"}, {"id": "a", "question": "R"}))
    with pytest.raises(ConfigError, match="cannot read"):
        load_cases(tmp_path / "missing.jsonl")


def _result(case_id: str, **figures: object) -> CaseResult:
    base: dict[str, object] = {
        "case_id": case_id,
        "question": "Q",
        "thread_id": f"t-{case_id}",
        "status": "done",
        "answer": "A",
        "correctness": 1.0,
        "facts": [],
        "judged": None,
        "grounding": None,
        "citations": 0,
        "citations_valid": None,
        "cites_expected": None,
        "tokens": 10,
        "cost": 0.0,
        "latency_s": 1.0,
    }
    return CaseResult(**(base | figures))  # type: ignore[arg-type]


def test_the_summary_averages_over_the_cases_that_have_each_score() -> None:
    summary = summarize(
        [
            _result("a", correctness=1.0, grounding=0.5, cites_expected=True, latency_s=1.0),
            _result("b", correctness=0.0, status="failed", tokens=30, latency_s=3.0),
        ]
    )
    assert summary["correctness"] == 0.5
    assert summary["grounding"] == 0.5  # b had no rag step
    assert summary["cites_expected"] == 1.0
    assert summary["done"] == 1
    assert summary["failed"] == 1
    assert summary["tokens_mean"] == 20
    assert summary["latency_s_max"] == 3.0
    assert summary["judged_correct"] is None


def test_two_configurations_are_reported_side_by_side(tmp_path: Path) -> None:
    runs = {
        name: {
            "options": options,
            "summary": summarize([_result("a", correctness=score)]),
            "results": [_result("a", correctness=score).as_json()],
        }
        for name, options, score in (
            ("baseline", {}, 1.0),
            ("against", {"planner": "llm"}, 0.0),
        )
    }
    report = markdown_report(tmp_path / "cases.jsonl", runs)
    assert "| correctness | 1.000 | 0.000 |" in report
    assert "**against**: planner=llm" in report
    assert "| a | done | 1.000 | 10 | done | 0.000 | 10 |" in report


def test_options_are_read_as_json_values_or_text() -> None:
    assert parse_options(["max_replans=0", "planner=llm", "documents=false"], what="x") == {
        "max_replans": 0,
        "planner": "llm",
        "documents": False,
    }
    with pytest.raises(ConfigError, match="bad --option 'planner'"):
        parse_options(["planner"], what="--option")
