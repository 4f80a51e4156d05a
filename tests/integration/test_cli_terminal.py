"""The CLI at a terminal: it asks the person at an approval point and goes on with the answer."""

import os
import pty
import re
import select
import subprocess
import sys
import time

from tests.integration.conftest import REPO, Cli


def _read_until(fd: int, pattern: str, buffer: list[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                break
            buffer.append(chunk)
            text = "".join(buffer)
            if re.search(pattern, text):
                return text
    raise AssertionError(f"never saw {pattern!r}; got:\n{''.join(buffer)[-2000:]}")


def test_terminal_user_approves_at_the_prompt(cli: Cli) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "ask", "What is A? What is B?", "--approval", "always"],
        cwd=REPO,
        env={**cli.env, "COLUMNS": "200"},
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    seen: list[str] = []
    try:
        _read_until(leader, r"\[a\]pprove / \[r\]eject / \[e\]dit", seen)
        os.write(leader, b"a\n")
        text = _read_until(leader, r"status: done\s+thread: \w+", seen)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(leader)
    assert "Approval needed (plan)" in text
    assert "Run report" in text
    thread_id = re.search(r"thread: (\w+)", text.split("status: done")[-1])
    assert thread_id is not None
    shown = cli.json("threads", "show", thread_id.group(1))
    assert shown["status"] == "done"
    assert [a["decision"] for a in shown["report"]["approvals"]] == ["approve"]
