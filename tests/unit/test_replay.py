"""The compact record of a run's events, and the pace of a replay."""

import json
from typing import Any

import pytest

from graphs.replay import MAX_PAUSE_S, MIN_SPEED, check_speed, paced, timeline_of_view
from graphs.run_records import RunRecorder, decode
from graphs.threads import ThreadView
from nodes.artifacts import tool_output_kind


class FakeClock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _delta(step: str | None, text: str, node: str = "reasoning") -> dict[str, Any]:
    return {"event": "delta", "node": node, "step_id": step, "text": text}


def _record(timed: list[tuple[float, dict[str, Any]]]) -> tuple[RunRecorder, dict[str, Any]]:
    clock = FakeClock()
    recorder = RunRecorder(clock=clock)
    for at, event in timed:
        clock.now = 100.0 + at
        recorder.see(event)
    # What the table holds, and what a read gives back.
    return recorder, json.loads(json.dumps(recorder.record()))


def test_interleaved_streams_decode_to_the_same_events_in_the_same_order() -> None:
    timed = [
        (0.0, {"event": "plan_update", "version": 1, "plan": {"steps": []}}),
        (0.001, {"event": "handoff", "source": "dispatch", "target": "reasoning"}),
        (0.002, _delta("s1", "Photo")),
        (0.002, _delta("s2", "The sky")),  # the same tick: the order must still hold
        (0.002, _delta("s1", "synthesis ")),
        (0.010, _delta("s2", " is blue")),
        (0.010, {"event": "step_result", "result": {"step_id": "s1", "output": "x"}}),
        (0.011, _delta("s1", "é ✓ ")),
        (0.020, _delta(None, "Answer", node="synthesize")),
        (0.030, {"event": "final", "answer": "Answer"}),
    ]
    recorder, record = _record(timed)

    timeline = decode(record)

    assert [event for _, event in timeline] == [event for _, event in timed]
    offsets = [offset for offset, _ in timeline]
    assert offsets == sorted(offsets)
    assert abs(offsets[5] - 10.0) < 0.5  # milliseconds since the run started
    assert recorder.count == len(timed)


def test_deltas_are_kept_once_per_stream_with_a_pair_per_delta() -> None:
    words = [f"word{i} " for i in range(200)]
    _, record = _record([(i * 0.005, _delta("s1", w)) for i, w in enumerate(words)])

    [stream] = record["deltas"]
    assert stream["text"] == "".join(words)
    assert len(stream["marks"]) == 200
    assert [gap for gap, _ in stream["marks"][1:]] == [50] * 199  # 5 ms is 50 ticks
    assert [length for _, length in stream["marks"]] == [len(w) for w in words]
    assert record["events"] == []
    # Far smaller than the events as the live stream sends them.
    live = sum(len(json.dumps(_delta("s1", w))) for w in words)
    assert len(json.dumps(record, separators=(",", ":"))) < live / 2


def test_a_delta_with_more_fields_is_kept_whole() -> None:
    odd = {**_delta("s1", "hi"), "agent": "skeptic"}
    _, record = _record([(0.0, odd)])

    assert record["deltas"] == []
    assert [event for _, event in decode(record)] == [odd]


async def test_a_replay_keeps_the_offsets_divided_by_the_speed() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock.now += seconds

    timeline = [(0.0, {"event": "a"}), (1000.0, {"event": "b"}), (1500.0, {"event": "c"})]

    got = [e["event"] async for e in paced(timeline, speed=10, sleep=sleep, clock=clock)]

    assert got == ["a", "b", "c"]
    assert slept == [0.1, 0.05]


async def test_a_replay_at_speed_zero_never_waits() -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    timeline = [(0.0, {"event": "a"}), (60_000.0, {"event": "b"})]

    got = [e["event"] async for e in paced(timeline, speed=0, sleep=sleep)]

    assert got == ["a", "b"]


def test_a_thread_without_records_is_told_from_its_checkpoint() -> None:
    view: dict[str, Any] = {
        "thread_id": "t1",
        "status": "done",
        "plan_history": [{"version": 1, "source": "rules", "reason": "r", "plan": {}}],
        "results": [{"step_id": "s1"}],
        "pending_approval": None,
        "answer": "42",
        "citations": [],
        "report": None,
    }

    events = [e for _, e in timeline_of_view(ThreadView(**view))]  # type: ignore[typeddict-item]

    assert [e["event"] for e in events] == ["plan_update", "step_result", "final"]
    assert events[0]["version"] == 1
    assert events[2]["answer"] == "42"


def test_structured_or_large_tool_outputs_become_artifacts() -> None:
    assert tool_output_kind('{"rows": [1, 2]}') == ("json", "application/json")
    assert tool_output_kind(" [1, 2] ") == ("json", "application/json")
    assert tool_output_kind("391") is None
    assert tool_output_kind("{not json") is None
    assert tool_output_kind("x" * 5000) == ("txt", "text/plain; charset=utf-8")


async def test_no_pause_of_a_replay_is_longer_than_the_cap() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock.now += seconds

    # A model silent for ten minutes, then one more token 2 s later.
    timeline = [(0.0, {"event": "a"}), (600_000.0, {"event": "b"}), (602_000.0, {"event": "c"})]

    got = [e["event"] async for e in paced(timeline, speed=1, sleep=sleep, clock=clock)]

    assert got == ["a", "b", "c"]
    assert slept == [MAX_PAUSE_S, 2.0]


def test_a_speed_between_zero_and_the_slowest_is_refused() -> None:
    check_speed(0)
    check_speed(MIN_SPEED)
    check_speed(1000)
    for speed in (1e-300, MIN_SPEED / 2, -1.0, float("nan")):
        with pytest.raises(ValueError, match="speed"):
            check_speed(speed)
