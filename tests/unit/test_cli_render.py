"""The CLI's progress output shows text from users and models as it is, never as markup."""

import pytest

from cli.render import Progress


def test_progress_prints_brackets_literally(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress()
    progress.show(
        {
            "event": "handoff",
            "source": "dispatch",
            "target": "reasoning",
            "step_id": "s1",
            "reason": "explain [bold] and [/x] tags",
        }
    )
    progress.show({"event": "delta", "node": "reasoning", "step_id": "s1", "text": "a [b]"})
    progress.show(
        {
            "event": "step_result",
            "result": {
                "step_id": "s1",
                "status": "failed",
                "latency_ms": 3.0,
                "attempts": 2,
                "error": "boom [/x]",
            },
        }
    )
    progress.show(
        {
            "event": "plan_update",
            "version": 1,
            "source": "rules",
            "reason": "r [x]",
            "fallback_reason": None,
            "plan": {
                "goal": "g",
                "steps": [
                    {
                        "id": "s1",
                        "kind": "reasoning",
                        "depends_on": [],
                        "requires_approval": False,
                        "instruction": "do [/bold] it",
                    }
                ],
            },
        }
    )
    progress.close()

    err = capsys.readouterr().err
    assert "explain [bold] and [/x] tags" in err
    assert "[s1] a [b]" in err
    assert "✗ s1 failed (3 ms, 2 attempt(s)): boom [/x]" in err
    assert "do [/bold] it" in err
    assert "Plan v1 (rules): r [x]" in err
