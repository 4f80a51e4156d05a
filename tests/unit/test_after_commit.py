"""A run's step results reach its client only once their writes are committed, in order."""

from typing import Any

from graphs.runs import RunEvent, _AfterCommit


def _result(step_id: str) -> RunEvent:
    return {"event": "step_result", "result": {"step_id": step_id}}


def _delta(text: str) -> RunEvent:
    return {"event": "delta", "text": text}


def _names(events: list[RunEvent]) -> list[Any]:
    return [e.get("text") or e["result"]["step_id"] for e in events]


def test_a_step_result_and_what_follows_wait_for_its_commit() -> None:
    seen: list[RunEvent] = []
    announcer = _AfterCommit(seen.append, holding=True)
    announcer.put(_delta("a"))
    announcer.put(_result("s1"))
    announcer.put(_delta("b"))
    assert _names(seen) == ["a"]

    announcer.committed([("usage", [{}]), ("results", {"s2": {}})])
    assert _names(seen) == ["a"]  # another step's commit releases nothing of s1
    announcer.committed([("results", {"s1": {}})])
    assert _names(seen) == ["a", "s1", "b"]

    announcer.put(_result("s2"))  # committed before it was announced: goes at once
    assert _names(seen) == ["a", "s1", "b", "s2"]


def test_a_result_announced_again_waits_for_its_own_commit() -> None:
    seen: list[RunEvent] = []
    announcer = _AfterCommit(seen.append, holding=True)
    announcer.committed([("results", {"s1": {}})])
    announcer.put(_result("s1"))
    announcer.put(_result("s1"))  # a step of the same id in a revised plan
    assert _names(seen) == ["s1"]
    announcer.release()  # the run ended: the rest goes on
    assert _names(seen) == ["s1", "s1"]


def test_nothing_is_held_without_the_postgres_saver() -> None:
    seen: list[RunEvent] = []
    announcer = _AfterCommit(seen.append, holding=False)
    announcer.put(_result("s1"))
    assert _names(seen) == ["s1"]
