"""A process that dies in native code (a segfault in llama.cpp, say) is never silent."""

import signal

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
