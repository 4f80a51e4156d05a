"""The CLI end to end: real processes, the real embedded Postgres, the real local model."""

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO, Cli

TWO_PARTS = "What is photosynthesis? Why is the sky blue?"


def test_full_run_answers_with_a_report(cli: Cli) -> None:
    doc = cli.json("ask", TWO_PARTS, "--approval", "never")

    assert doc["_exit_code"] == 0
    assert doc["status"] == "done"
    assert doc["answer"]
    assert [s["id"] for s in doc["plan"]["steps"]] == ["s1", "s2"]
    report = doc["report"]
    assert report["total_tokens"] > 0
    assert report["input_tokens"] > 0
    assert report["output_tokens"] > 0
    assert report["total_cost"] == 0.0  # the local model is free
    assert report["latency_ms"] > 0
    assert {"orchestrator", "planner", "reasoning", "critic", "synthesize", "finalize"} <= set(
        report["nodes"]
    )
    assert report["nodes"]["reasoning"]["calls"] == 2
    assert report["verdict"] == "accept"
    assert doc["pending_approval"] is None
    assert doc["resume_command"] is None


def test_approval_pauses_in_one_process_and_resumes_in_another(cli: Cli) -> None:
    first = cli.json("ask", TWO_PARTS, "--approval", "always", "--no-input")

    assert first["_exit_code"] == 3
    assert first["status"] == "interrupted"
    assert first["answer"] is None
    assert first["pending_approval"]["gate"] == "plan"
    assert first["pending_approval"]["plan"]["steps"]
    assert first["resume_command"].startswith(f"agentgraph resume {first['thread_id']} --approve")

    second = cli.json("resume", first["thread_id"], "--approve")

    assert second["_exit_code"] == 0
    assert second["status"] == "done"
    assert second["answer"]
    assert [a["decision"] for a in second["report"]["approvals"]] == ["approve"]

    shown = cli.json("threads", "show", first["thread_id"])
    assert shown["status"] == "done"
    assert shown["answer"] == second["answer"]


def test_a_new_question_on_a_thread_waiting_for_approval_is_refused(cli: Cli) -> None:
    first = cli.json("ask", TWO_PARTS, "--approval", "always", "--no-input")
    assert first["status"] == "interrupted"
    thread_id = first["thread_id"]

    again = cli.run("ask", "What is C?", "--thread", thread_id, "--no-input")

    # The server answers the same case 409 with the same reason (test_server_runs.py).
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: thread {thread_id!r} waits for approval: resume it instead of starting a run"
    )
    shown = cli.json("threads", "show", thread_id)
    assert shown["status"] == "interrupted"
    assert shown["request"] == TWO_PARTS  # nothing of the refused question was written
    assert shown["pending_approval"] == first["pending_approval"]


def test_reject_ends_the_run_as_rejected(cli: Cli) -> None:
    first = cli.json("ask", TWO_PARTS, "--approval", "always", "--no-input")
    doc = cli.json("resume", first["thread_id"], "--reject", "not today")

    assert doc["_exit_code"] == 4
    assert doc["status"] == "rejected"
    assert "not today" in doc["answer"]
    assert doc["report"]["approvals"][0]["reason"] == "not today"
    assert "reasoning" not in doc["report"]["nodes"]  # nothing ran after the rejection


def test_edit_runs_the_edited_plan(cli: Cli, tmp_path: Path) -> None:
    first = cli.json("ask", TWO_PARTS, "--approval", "always", "--no-input")
    edited = {
        "goal": "What is the capital of France?",
        "steps": [
            {
                "id": "capital",
                "kind": "reasoning",
                "instruction": "What is the capital of France?",
                "depends_on": [],
                "requires_approval": False,
            }
        ],
    }
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(edited))

    doc = cli.json("resume", first["thread_id"], "--edit", str(plan_file))

    assert doc["status"] == "done"
    assert doc["plan"] == edited
    assert [s["step_id"] for s in doc["report"]["steps"]] == ["capital"]
    shown = cli.json("threads", "show", first["thread_id"])
    assert [r["source"] for r in shown["plan_history"]] == ["rules", "edit"]


def test_failing_step_is_retried_reported_and_replanned(cli: Cli) -> None:
    # A per-attempt timeout no generation can meet: every attempt of every step times out.
    env = {"AGENTGRAPH_STEP_TIMEOUT_S": "0.02", "AGENTGRAPH_STEP_ATTEMPTS": "2"}
    doc = cli.json(
        "ask",
        "What is the capital of France?",
        "--approval",
        "never",
        "--max-replans",
        "1",
        env=env,
    )

    assert doc["status"] == "failed"
    assert doc["_exit_code"] == 1
    steps = doc["report"]["steps"]
    assert steps, "the failed steps are in the report"
    for step in steps:
        assert step["status"] == "failed"
        assert step["attempts"] == 2
        assert "timed out" in step["error"]
    # The critic asked for exactly one replan (the limit), visible in the plan history.
    shown = cli.json("threads", "show", doc["thread_id"])
    assert [r["source"] for r in shown["plan_history"]] == ["direct", "replan"]
    assert "did not succeed" in shown["plan_history"][1]["reason"]
    assert doc["report"]["replans"] == 1
    assert doc["report"]["verdict"] == "give_up"
    assert "No answer" in doc["answer"]


def test_token_budget_stops_the_run_with_the_reason(cli: Cli) -> None:
    doc = cli.json("ask", TWO_PARTS, "--approval", "never", "--token-budget", "40")

    assert doc["report"]["budget_exhausted"] is True
    assert doc["report"]["verdict"] == "give_up"
    assert "token budget exhausted" in doc["answer"]
    assert "token budget exhausted" in doc["report"]["verdict_reason"]


def test_history_lists_checkpoints_newest_first(cli: Cli) -> None:
    doc = cli.json("ask", "What is the capital of France?", "--approval", "never")
    hist = cli.json("threads", "history", doc["thread_id"])

    checkpoints = hist["checkpoints"]
    assert len(checkpoints) > 5
    steps = [c["step"] for c in checkpoints]
    assert steps == sorted(steps, reverse=True)


def test_errors_are_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    unknown = cli.run("resume", "no-such-thread", "--approve")
    assert unknown.returncode == 1
    assert "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1] == (
        "error: unknown thread 'no-such-thread': no run has been stored under that id "
        "(list ids with 'agentgraph threads list')"
    )

    done = cli.json("ask", "What is the capital of France?", "--approval", "never")
    again = cli.run("resume", done["thread_id"], "--approve")
    assert again.returncode == 1
    assert "is done, not waiting for approval: nothing to resume" in again.stderr
    assert "Traceback" not in again.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"goal": "x", "steps": [{"id": "a", "kind": "reasoning", '
        '"instruction": "x", "depends_on": ["a"], "requires_approval": false}]}'
    )
    waiting = cli.json("ask", TWO_PARTS, "--approval", "always", "--no-input")
    edited = cli.run("resume", waiting["thread_id"], "--edit", str(bad))
    assert edited.returncode == 1
    assert "step a depends on itself" in edited.stderr
    assert "Traceback" not in edited.stderr
    assert edited.stderr.strip().splitlines()[-1].startswith("error: the edited plan is invalid")
    # The thread is still waiting: a bad edit changes nothing.
    assert cli.json("threads", "show", waiting["thread_id"])["status"] == "interrupted"

    bad_setting = cli.run("threads", "list", env={"AGENTGRAPH_MAX_REPLANS": "lots"})
    assert bad_setting.returncode == 1
    assert "AGENTGRAPH_MAX_REPLANS" in bad_setting.stderr


def test_two_processes_share_one_embedded_cluster(data_dir: Path, cli: Cli) -> None:
    env = {**cli.env, "DATABASE_URL": ""}  # no URL: the embedded Postgres in the data dir
    command = [
        sys.executable,
        "-m",
        "cli",
        "ask",
        "What is the capital of France?",
        "--approval",
        "never",
        "--json",
    ]
    procs = [
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]

    docs = [json.loads(stdout) for stdout, _ in outputs]
    assert [d["status"] for d in docs] == ["done", "done"], [e for _, e in outputs]
    assert docs[0]["thread_id"] != docs[1]["thread_id"]
    # Both threads are in the one cluster, readable by a third process.
    for d in docs:
        shown = subprocess.run(
            [sys.executable, "-m", "cli", "threads", "show", d["thread_id"], "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert json.loads(shown.stdout)["answer"] == d["answer"]
