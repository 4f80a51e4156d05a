"""The server's pure parts: status codes of domain errors, SSE framing, the LangServe input."""

import json
from dataclasses import fields

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.errors import (
    AgentGraphError,
    ConfigError,
    DatabaseError,
    InvalidDecisionError,
    NothingToResumeError,
    ServerStoppingError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from nodes.context import SERVER_SET, Context
from server.errors import install_error_handlers, status_of
from server.langserve_routes import AgentInput
from server.schemas import RunOptions, RunRequest
from server.sse import format_event


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ThreadNotFoundError("t"), 404),
        (ThreadBusyError("t", "is running"), 409),
        (NothingToResumeError("t", "done"), 409),
        (InvalidDecisionError("bad"), 422),
        (ConfigError("bad option"), 422),
        (ServerStoppingError("stopping"), 503),
        (DatabaseError("down"), 503),
        (AgentGraphError("anything else"), 400),
    ],
)
def test_domain_errors_map_to_status_codes(error: AgentGraphError, status: int) -> None:
    assert status_of(error) == status


def test_sse_message_framing() -> None:
    text = format_event("delta", {"event": "delta", "text": "two\nlines"})
    assert text.startswith("event: delta\ndata: ")
    assert text.endswith("\n\n")
    # JSON keeps the newline escaped: one data line per message.
    assert text.count("\n") == 3
    assert json.loads(text.split("data: ", 1)[1])["text"] == "two\nlines"


def test_langserve_input_takes_exactly_one_of_question_and_resume() -> None:
    assert AgentInput(question="q").question == "q"
    resumed = AgentInput.model_validate({"resume": {"decision": "reject", "reason": "no"}})
    assert resumed.resume is not None
    assert resumed.resume.reason == "no"
    with pytest.raises(ValidationError):
        AgentInput()
    with pytest.raises(ValidationError):
        AgentInput.model_validate({"question": "q", "resume": {"decision": "approve"}})


def test_run_request_uses_the_cli_option_names() -> None:
    body = RunRequest.model_validate(
        {"question": "q", "approval": "always", "max_replans": 0, "token_budget": 10}
    )
    assert body.overrides() == {
        "approval": "always",
        "max_replans": 0,
        "token_budget": 10,
    }
    with pytest.raises(ValidationError):
        RunRequest.model_validate({"question": "q", "approval": "sometimes"})
    # A run may not ask for more rounds or a larger plan than a process may be set to.
    for bound in ({"max_replans": 11}, {"max_steps": 51}):
        with pytest.raises(ValidationError):
            RunRequest.model_validate({"question": "q", **bound})


def test_every_run_option_can_be_set_over_http() -> None:
    assert set(RunOptions.model_fields) == {f.name for f in fields(Context)} - set(SERVER_SET)


async def test_a_value_postgres_refuses_is_the_requests_fault_not_a_500() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/store")
    async def store() -> None:
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/store")

    assert response.status_code == 422
    assert "cannot store" in response.json()["message"]
