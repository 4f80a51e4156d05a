"""`agentgraph eval runs`: a dataset's questions run through the real graph on the embedded
Postgres, answered from a collection the dataset brings, scored, and two configurations
compared side by side."""

import json
from pathlib import Path

from tests.fakes import scripted_spec
from tests.integration.conftest import Cli


def _dataset(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        json.dumps({"_id": "d1", "title": "Capitals", "text": "Paris is the capital of France."})
        + "\n"
        + json.dumps({"_id": "d2", "title": "Rivers", "text": "The Loire is a long river."})
        + "\n"
    )
    cases = tmp_path / "cases.jsonl"
    rows = [
        {
            "id": "capital",
            "question": "What is the capital of France?",
            "facts": ["Paris is the capital of France"],
            "collection": "evalcities",
            "documents": "corpus.jsonl",
            "sources": ["#d1"],
        },
        {"id": "river", "question": "Name a long French river.", "reference": "The Loire"},
    ]
    cases.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return cases


def test_eval_runs_scores_two_configurations_side_by_side(
    scripted_cli: Cli, tmp_path: Path
) -> None:
    good = scripted_spec(reply="Paris is the capital of France [1]. The Loire.")
    poor = scripted_spec(reply="I do not know.")
    out = tmp_path / "out"
    done = scripted_cli.run(
        "eval",
        "runs",
        str(_dataset(tmp_path)),
        "--option",
        f"model={good}",
        "--against",
        f"model={poor}",
        "--against",
        "documents=false",  # the river question may not answer from the cities' collection
        "--out",
        str(out),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert json.loads((out / "eval.json").read_text()) == printed
    baseline, against = (printed["configurations"][n] for n in ("baseline", "against"))
    by_case = {r["case_id"]: r for r in baseline["results"]}
    capital, river = by_case["capital"], by_case["river"]

    assert capital["status"] == "done"
    assert capital["correctness"] == 1.0
    assert capital["facts"][0]["found"]
    assert capital["citations"] >= 1
    assert capital["citations_valid"] == 1.0  # the cited chunk exists and holds the quote
    assert capital["cites_expected"] is True
    assert capital["tokens"] > 0
    assert river["correctness"] is not None
    assert river["correctness"] > 0  # token F1 against "The Loire"
    assert river["cites_expected"] is None
    assert baseline["summary"]["done"] == 2

    worse = {r["case_id"]: r for r in against["results"]}
    assert worse["river"]["correctness"] == 0.0  # "I do not know." shares no word with it
    assert against["summary"]["correctness"] < baseline["summary"]["correctness"]
    report = (out / "eval.md").read_text()
    assert "| figure | baseline | against |" in report
    assert "| capital |" in report


def test_eval_runs_refuses_a_bad_dataset_in_one_line(cli: Cli, tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"question": "Q?"}\n{"facts": ["x"]}\n')
    done = cli.run("eval", "runs", str(cases))
    assert done.returncode != 0
    assert f"{cases}:2: 'question' must be a non-empty string" in done.stderr
    assert "Traceback" not in done.stderr
