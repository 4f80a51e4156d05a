"""A process that dies in native code (a segfault in llama.cpp, say) is never silent."""

import signal
import time
from pathlib import Path

import psycopg

from tests.fakes import scripted_spec
from tests.integration.conftest import Cli

QUESTION = "What is a B-tree?"


def test_a_segfault_mid_step_prints_its_stack_and_leaves_the_thread_to_continue(
    scripted_cli: Cli, thread_id: str
) -> None:
    model = scripted_spec(reply="Never said.", crash_on_call=1)
    asked = scripted_cli.run(
        "ask", QUESTION, "--thread", thread_id, "--model", model, "--approval", "never"
    )

    assert asked.returncode == -signal.SIGSEGV, asked.stderr
    # Python's fault handler names the crash and the stack it happened under.
    assert "Fatal Python error: Segmentation fault" in asked.stderr
    assert "tests/fakes.py" in asked.stderr

    # The dead process's thread lock went with its connection: the thread reads as cut off.
    shown = scripted_cli.json("threads", "show", thread_id)
    assert shown["status"] == "running"
    assert shown["can_continue"] is True
    text = scripted_cli.run("threads", "show", thread_id)
    assert "the run was cut off with steps left (a stop or a crash)" in text.stdout
    assert f"agentgraph resume {thread_id} --continue" in text.stdout


def test_a_run_that_dies_keeps_its_record_until_then_for_replay(
    scripted_cli: Cli, thread_id: str, embedded_url: str, tmp_path: Path
) -> None:
    """The first step's result is stored with its streamed text while the run goes on; the
    process then dies in the second step's model call, and the replay still shows the
    first step as it streamed (deltas come from the record only, never the checkpoints)."""
    gate = tmp_path / "crash-now"
    model = scripted_spec(
        reply="Said before the crash.", crash_on_call=2, gate_file=str(gate), gate_from_call=2
    )
    asking = scripted_cli.start(
        "ask", "What is A? What is B?", "--thread", thread_id, "--model", model,
        "--approval", "never", "--mode", "plan",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _recorded(embedded_url, thread_id, "step_result"):
            assert asking.poll() is None, asking.communicate()[0]
            assert time.monotonic() < deadline, "no record while the run went on"
            time.sleep(0.1)
        gate.touch()  # the second model call goes on, and crashes
        assert asking.wait(timeout=120) == -signal.SIGSEGV
    finally:
        asking.kill()
        asking.communicate()

    replayed = scripted_cli.json("replay", thread_id, "--speed", "0")
    kinds = [e["event"] for e in replayed["events"]]
    assert "final" not in kinds
    [first] = [e["result"] for e in replayed["events"] if e["event"] == "step_result"]
    streamed = "".join(
        e["text"]
        for e in replayed["events"]
        if e["event"] == "delta" and e["step_id"] == first["step_id"]
    )
    assert streamed.strip() == first["output"] == "Said before the crash."


def _recorded(database_url: str, thread_id: str, event: str) -> bool:
    """Whether the thread's stored record holds an event of that kind (False before the CLI
    made the records' table)."""
    try:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT record::text FROM agentgraph_run_records WHERE thread_id = %s",
                (thread_id,),
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return False
    return any(f'"event":"{event}"' in row[0] for row in rows)
