"""Stop requests as they travel in a Postgres notification."""

import pytest

from graphs.driver import RunOrder
from graphs.multitask import StopRequest


def test_a_stop_request_survives_its_payload() -> None:
    request = StopRequest("thread-1", "rollback", "claim-9")
    assert StopRequest.parse(request.payload()) == request


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        '{"thread_id": "t"}',
        '{"thread_id": "t", "mode": "x", "request_id": "r"}',
    ],
)
def test_anything_else_on_the_channel_is_ignored(payload: str) -> None:
    assert StopRequest.parse(payload) is None


def test_only_a_new_question_takes_a_strategy() -> None:
    with pytest.raises(ValueError, match="multitask"):
        RunOrder(thread_id="t", proceed=True, multitask="enqueue")
    assert RunOrder(thread_id="t", request="q", multitask="rollback").multitask == "rollback"
