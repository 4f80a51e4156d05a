"""The A2A surface, driven by the A2A SDK's own client against the real server: the card,
a task sent and streamed with its answer in chunks, an approval as `INPUT_REQUIRED` answered
on the same task, a task read back, a 0.3 `message/send`, and a cancel."""

import contextlib
import io
import uuid
from typing import Any

import httpx
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import get_artifact_text, new_data_part, new_text_part
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Struct

from app.settings import Settings
from tests.fakes import MakeModel
from tests.integration.conftest import REPO
from tests.integration.server_harness import RunningServer, running_server, wait_for

QUESTION = "What is A? What is B?"


def _message(
    text: str | None = None,
    *,
    data: Any = None,
    options: dict[str, Any] | None = None,
    task_id: str = "",
    context_id: str = "",
) -> Message:
    parts = ([new_text_part(text)] if text is not None else []) + (
        [new_data_part(data)] if data is not None else []
    )
    message = Message(
        role=Role.ROLE_USER,
        parts=parts,
        message_id=uuid.uuid4().hex,
        task_id=task_id,
        context_id=context_id,
    )
    if options:
        message.metadata.CopyFrom(ParseDict({"agentgraph": options}, Struct()))
    return message


async def _send(api: RunningServer, message: Message) -> list[StreamResponse]:
    async with httpx.AsyncClient(timeout=60) as http:
        client = await create_client(api.base_url, client_config=ClientConfig(httpx_client=http))
        return [event async for event in client.send_message(SendMessageRequest(message=message))]


async def test_the_card_names_the_endpoint_and_streaming(api: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
    assert card["name"] == "agentgraph"
    assert card["capabilities"]["streaming"] is True
    assert card["supportedInterfaces"][0]["url"] == f"{api.base_url}/a2a"
    assert "securitySchemes" not in card  # authentication is off on loopback


async def test_a_streamed_task_sends_its_answer_in_chunks_and_completes(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Streamed words of an answer.")
    events = await _send(
        api,
        _message(QUESTION, options={"approval": "never", "synthesis": "model", "model": spec}),
    )
    chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
    answer = [c for c in chunks if c.artifact.artifact_id == "answer"]
    assert len(answer) > 3
    assert not answer[0].append
    assert all(c.append for c in answer[1:])
    assert answer[-1].last_chunk
    text = "".join(get_artifact_text(c.artifact) for c in answer)
    assert "Streamed words of an answer." in text
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert TaskState.TASK_STATE_WORKING in states
    assert states[-1] == TaskState.TASK_STATE_COMPLETED


async def test_an_approval_is_input_required_and_answered_on_the_task(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Approved answer.")
    events = await _send(api, _message(QUESTION, options={"approval": "always", "model": spec}))
    last = events[-1].status_update
    assert last.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    asked = last.status.message
    assert "waits for approval" in asked.parts[0].text
    task_id, context_id = last.task_id, last.context_id

    unclear = await _send(api, _message("hmm", task_id=task_id, context_id=context_id))
    assert unclear[-1].status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED

    approved = await _send(
        api, _message(data={"decision": "approve"}, task_id=task_id, context_id=context_id)
    )
    assert approved[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    async with httpx.AsyncClient(timeout=60) as http:
        client = await create_client(api.base_url, client_config=ClientConfig(httpx_client=http))
        task = await client.get_task(GetTaskRequest(id=task_id))
        thread = (await http.get(f"{api.base_url}/api/v1/threads/{context_id}")).json()
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "Approved answer." in "".join(get_artifact_text(a, "") for a in task.artifacts)
    assert [a["decision"] for a in thread["report"]["approvals"]] == ["approve"]


async def test_a_0_3_client_sends_message_send(api: RunningServer, make_model: MakeModel) -> None:
    spec, _ = make_model(reply="An old client's answer.")
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "role": "user",
                "messageId": uuid.uuid4().hex,
                "parts": [{"kind": "text", "text": QUESTION}],
                "metadata": {"agentgraph": {"approval": "never", "model": spec}},
            }
        },
    }
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
        answer = (await http.post("/a2a", json=body)).json()
    task = answer["result"]
    assert task["kind"] == "task"
    assert task["status"]["state"] == "completed"
    texts = [p["text"] for a in task["artifacts"] for p in a["parts"] if p.get("kind") == "text"]
    assert "An old client's answer." in "".join(texts)


async def test_json_rpc_at_a_trailing_slash_and_a_wrong_content_type(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Plain answer.")
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendMessage",
        "params": {
            "message": {
                "role": "ROLE_USER",
                "messageId": uuid.uuid4().hex,
                "parts": [{"text": QUESTION}],
                "metadata": {"agentgraph": {"approval": "never", "model": spec}},
            }
        },
    }
    headers = {"A2A-Version": "1.0"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60, headers=headers) as http:
        answered = await http.post("/a2a/", json=body)  # as a client joining "/" to the URL
        wrong = await http.post("/a2a", content=b"not json", headers={"Content-Type": "text/plain"})
    assert answered.status_code == 200
    task = answered.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    done = task["status"]["message"]["parts"][1]["data"]
    assert set(done) == {"threadId", "runId"}  # camelCase, as A2A's JSON is
    assert done["threadId"] == task["contextId"]
    assert wrong.status_code == 415
    assert wrong.json()["error"]["code"] == -32005


async def test_a_cancelled_task_stops_its_run(api: RunningServer, make_model: MakeModel) -> None:
    spec, _ = make_model(reply="A slow answer.", delay_s=0.5)
    message = _message(QUESTION, options={"approval": "never", "mode": "plan", "model": spec})
    async with httpx.AsyncClient(timeout=60) as http:
        client = await create_client(api.base_url, client_config=ClientConfig(httpx_client=http))
        stream = client.send_message(SendMessageRequest(message=message))
        task_id = context_id = ""
        async for event in stream:
            if event.HasField("status_update"):
                update = event.status_update
                task_id, context_id = update.task_id, update.context_id
                if update.status.state == TaskState.TASK_STATE_WORKING:
                    break
        await stream.aclose()
        canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        task = await client.get_task(GetTaskRequest(id=task_id))
        assert task.status.state == TaskState.TASK_STATE_CANCELED

        async def stopped() -> bool:
            view = (await http.get(f"{api.base_url}/api/v1/threads/{context_id}")).json()
            return bool(view["can_continue"] or view["status"] == "done")

        await wait_for(stopped, within_s=30)
        view = (await http.get(f"{api.base_url}/api/v1/threads/{context_id}")).json()
    # Stopped between steps, before its end, with steps left to continue.
    assert view["can_continue"], view
    assert view["next"], view


async def test_a_waiting_task_outlives_its_server(
    settings: Settings, embedded_url: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer after a restart.")
    with running_server(settings, embedded_url) as first:
        events = await _send(
            first, _message(QUESTION, options={"approval": "always", "model": spec})
        )
    waiting = events[-1].status_update
    assert waiting.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    with running_server(settings, embedded_url) as second:
        async with httpx.AsyncClient(timeout=60) as http:
            client = await create_client(
                second.base_url, client_config=ClientConfig(httpx_client=http)
            )
            task = await client.get_task(GetTaskRequest(id=waiting.task_id))
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        done = await _send(
            second, _message("approve", task_id=waiting.task_id, context_id=waiting.context_id)
        )
    assert done[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


def test_the_readme_example_runs(api: RunningServer, make_model: MakeModel) -> None:
    """The README's A2A client example, as written but for the address; the model and the
    approval policy are set as the server's defaults would be set for it."""
    spec, _ = make_model(reply="The README's A2A answer.")
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- a2a-example -->")[1].split("<!-- /a2a-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    code = code.replace("http://127.0.0.1:8000", api.base_url)
    code = code.replace(
        "message_id=uuid.uuid4().hex,",
        "message_id=uuid.uuid4().hex, metadata=OPTIONS,",
    )
    options = ParseDict({"agentgraph": {"approval": "never", "model": spec}}, Struct())
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(code, {"OPTIONS": options})  # the README's own lines
    assert "The README's A2A answer." in printed.getvalue()
    assert printed.getvalue().rstrip().endswith("[TASK_STATE_COMPLETED]")
