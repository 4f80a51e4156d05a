"""Background runs' pure parts: a run order as its row keeps it, how a run's events say it
ended, cron schedules, and the request body's rules."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.errors import ConfigError
from graphs.crons import next_firing
from graphs.driver import RunOrder
from graphs.queue import _Outcome, order_document, order_of
from graphs.run_log import RunRecord, kind_of
from server.schemas import BackgroundRunRequest, CronRequest, refuse_nul


def _record(order: RunOrder) -> RunRecord:
    now = datetime.now(UTC)
    return RunRecord(
        run_id="r1",
        thread_id=order.thread_id,
        status="queued",
        run_order=order_document(order),
        started_by="local",
        tenant="local",
        job_id=1,
        cron_id=None,
        attempts=0,
        worker=None,
        error=None,
        created_at=now,
        started_at=None,
        ended_at=None,
    )


@pytest.mark.parametrize(
    ("order", "kind"),
    [
        (
            RunOrder(
                thread_id="t",
                request="What is A?",
                options={"model": "local", "max_replans": 2},
                new_thread=True,
                multitask="enqueue",
            ),
            "request",
        ),
        (RunOrder(thread_id="t", decision={"decision": "approve", "by": "local"}), "resume"),
        (RunOrder(thread_id="t", proceed=True), "continue"),
    ],
)
def test_a_run_order_comes_back_from_its_row_as_it_was_given(order: RunOrder, kind: str) -> None:
    record = _record(order)

    assert order_of(record) == order
    assert kind_of(record.run_order) == kind
    assert record.public()["kind"] == kind


def test_a_run_ends_as_its_last_telling_event_says() -> None:
    outcome = _Outcome()
    assert (outcome.status, outcome.error) == ("failed", "the run ended without an outcome")

    outcome.see({"event": "delta", "text": "x"})
    outcome.see({"event": "interrupt", "payload": {}})
    assert (outcome.status, outcome.error) == ("interrupted", None)

    outcome.see({"event": "final", "status": "rejected"})
    assert (outcome.status, outcome.error) == ("rejected", None)

    outcome.see({"event": "error", "type": "RunStopped", "message": "another run took it"})
    assert (outcome.status, outcome.error) == ("cancelled", "another run took it")
    outcome.see({"event": "error", "type": "ModelError", "message": "boom"})
    assert (outcome.status, outcome.error) == ("failed", "boom")


def test_a_schedule_fires_next_at_its_next_time_and_a_bad_one_is_refused() -> None:
    start = datetime(2026, 1, 5, 8, 59, 30, tzinfo=UTC)  # a Monday

    assert next_firing("0 9 * * 1-5", start) == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert next_firing("* * * * * */10", start) == datetime(2026, 1, 5, 8, 59, 40, tzinfo=UTC)
    for bad in ("every day", "61 * * * *", "* * *"):
        with pytest.raises(ConfigError, match="bad schedule"):
            next_firing(bad, start)


def test_a_background_run_asks_exactly_one_thing() -> None:
    assert BackgroundRunRequest(question="Hi?", model="local").overrides() == {"model": "local"}
    assert BackgroundRunRequest(proceed=True).proceed
    assert BackgroundRunRequest.model_validate({"resume": {"decision": "approve"}}).resume

    for body in (
        {},
        {"question": "Hi?", "proceed": True},
        {"question": "Hi?", "resume": {"decision": "approve"}},
        {"proceed": True, "model": "local"},
        {"proceed": True, "multitask_strategy": "enqueue"},
    ):
        with pytest.raises(ValidationError):
            BackgroundRunRequest.model_validate(body)


def test_text_that_postgres_cannot_store_is_refused_before_it_is_queued() -> None:
    for body in (
        {"question": "a\x00b"},
        {"resume": {"decision": "reject", "reason": "no\x00"}},
        {"question": "Hi?", "model": "bad\x00model"},
    ):
        with pytest.raises(ValidationError, match="NUL"):
            BackgroundRunRequest.model_validate(body)
    with pytest.raises(ValidationError, match="NUL"):
        CronRequest.model_validate({"schedule": "* * * * *", "question": "a\x00"})
    with pytest.raises(ValueError, match="NUL"):
        refuse_nul({"key": [{"nested\x00key": 1}]})
    assert refuse_nul({"fine": ["text", 1, None]}) == {"fine": ["text", 1, None]}
