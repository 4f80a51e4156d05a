"""The Responses API (`/v1/responses`), driven by the official `openai` client against the
real server: a waited and a streamed response with the run's usage, a thread continued by
`previous_response_id`, citations as annotations, an approval answered in the conversation,
stored responses retrieved and deleted, and errors in OpenAI's shape."""

import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.settings import Settings
from retrievers.ingest import ingest
from retrievers.service import open_collection
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer

NEVER = {"agentgraph": {"approval": "never"}}


def _client(api: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)


def _extension(response: Any) -> dict[str, Any]:
    extra: dict[str, Any] = response.model_extra["agentgraph"]
    return extra


async def _thread(api: RunningServer, thread_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        found: dict[str, Any] = (await http.get(f"/api/v1/threads/{thread_id}")).json()
    return found


async def test_a_response_is_stored_continued_by_its_id_and_deleted(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = _client(api)
    raw = await client.responses.with_raw_response.create(
        model=f"agentgraph:{spec}", input="What is A? What is B?", extra_body=NEVER
    )
    first = raw.parse()
    assert first.status == "completed"
    assert "Answer" in first.output_text
    assert first.usage is not None
    assert first.usage.total_tokens > 0
    thread_id = raw.headers["x-thread-id"]
    assert _extension(first)["thread_id"] == thread_id
    thread = await _thread(api, thread_id)
    assert thread["report"]["total_tokens"] == first.usage.total_tokens

    again = await client.responses.retrieve(first.id)
    assert again.output_text == first.output_text

    second = await client.responses.with_raw_response.create(
        model=f"agentgraph:{spec}",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "And C?"}]}],
        previous_response_id=first.id,
        extra_body=NEVER,
    )
    assert second.headers["x-thread-id"] == thread_id
    assert second.parse().previous_response_id == first.id
    assert (await _thread(api, thread_id))["request"] == "And C?"

    deleted = await client.responses.delete(first.id)
    assert deleted is None  # the client returns nothing for a deletion that succeeded
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)


async def test_a_streamed_response_sends_its_events_in_order_with_usage(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Streamed words of an answer.")
    stream = await _client(api).responses.create(
        model=f"agentgraph:{spec}",
        input="What is A? What is B?",
        stream=True,
        extra_body={"agentgraph": {"approval": "never", "synthesis": "model"}},
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 3  # the synthesis streamed word by word
    done = events[-1].response  # type: ignore[union-attr]
    assert "".join(deltas) == done.output_text
    assert "Streamed words of an answer." in done.output_text
    assert done.usage is not None
    assert done.usage.total_tokens > 0
    stored = await _client(api).responses.retrieve(done.id)
    assert stored.output_text == done.output_text


async def test_citations_come_as_file_citations_on_the_sources(
    api: RunningServer,
    make_model: MakeModel,
    settings: Settings,
    embedded_url: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "okapi.md").write_text(
        "# The okapi\n\nThe okapi is a giraffid of the Ituri rainforest in Congo. It eats "
        "the leaves and buds of trees, fruit and fungi, and licks clay for its salt.\n"
    )
    collection = f"okapi_{uuid.uuid4().hex[:10]}"
    async with open_collection(settings, collection, create=True, url=embedded_url) as (
        store,
        embedder,
    ):
        await ingest(store, embedder, [tmp_path], chunk_size=500, chunk_overlap=50)
    spec, _ = make_model(reply="The okapi eats leaves [1].")
    response = await _client(api).responses.create(
        model=f"agentgraph:{spec}",
        input="What does the okapi eat?",
        extra_body={"agentgraph": {"approval": "never", "collection": collection}},
    )
    citations = _extension(response)["citations"]
    assert citations
    text = response.output[0].content[0]  # type: ignore[union-attr]
    assert "Sources:" in text.text
    annotations = text.annotations
    assert [a.file_id for a in annotations] == [c["chunk_id"] for c in citations]
    for i, annotation in enumerate(annotations, 1):
        assert annotation.filename == str(tmp_path / "okapi.md")
        assert text.text[annotation.index :].startswith(f"[{i}] {annotation.filename}:")


async def test_an_approval_is_answered_with_previous_response_id(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Approved answer.")
    client = _client(api)
    asked = await client.responses.create(
        model=f"agentgraph:{spec}",
        input="What is A? What is B?",
        extra_body={"agentgraph": {"approval": "always"}},
    )
    assert "waits for approval" in asked.output_text
    assert _extension(asked)["interrupt"]["gate"] == "plan"
    unclear = await client.responses.create(
        model=f"agentgraph:{spec}", input="hmm", previous_response_id=asked.id
    )
    assert "waits for the approval" in unclear.output_text
    approved = await client.responses.create(
        model=f"agentgraph:{spec}", input="approve", previous_response_id=unclear.id
    )
    assert "Approved answer." in approved.output_text
    thread = await _thread(api, _extension(asked)["thread_id"])
    assert [a["decision"] for a in thread["report"]["approvals"]] == ["approve"]


async def test_unknown_ids_bad_input_and_unstored_responses_get_openais_errors(
    api: RunningServer, make_model: MakeModel
) -> None:
    client = _client(api)
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.responses.create(
            model="agentgraph", input="Hi", previous_response_id="resp_nothing"
        )
    assert unknown.value.code == "not_found"
    assert "resp_nothing" in unknown.value.message
    with pytest.raises(openai.NotFoundError) as model:
        await client.responses.create(model="gpt-4o", input="Hi")
    assert model.value.code == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as tool_output:
        await client.responses.create(
            model="agentgraph",
            input=[{"type": "function_call_output", "call_id": "c1", "output": "4"}],
        )
    body: Any = tool_output.value.body
    assert body["type"] == "invalid_request_error"
    assert "input" in body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as empty:
        await client.responses.create(model="agentgraph", input=[{"role": "user", "content": " "}])
    assert "user message" in empty.value.message

    spec, _ = make_model(reply="Kept nowhere.")
    unstored = await client.responses.create(
        model=f"agentgraph:{spec}", input="What is A?", store=False, extra_body=NEVER
    )
    assert "Kept nowhere." in unstored.output_text
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
