"""The OpenAI-compatible surface, driven by the official `openai` client against the real
server: models, a plain and a streamed completion with usage, a session over several turns,
an approval answered in the conversation, and errors in OpenAI's shape."""

import contextlib
import io
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import MakeModel
from tests.integration.conftest import REPO
from tests.integration.server_harness import RunningServer


def _client(api: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)


def _extension(response: Any) -> dict[str, Any]:
    extra: dict[str, Any] = response.model_extra["agentgraph"]
    return extra


async def test_models_name_the_agent(api: RunningServer) -> None:
    ids = [m.id async for m in _client(api).models.list()]
    assert ids[0] == "agentgraph"
    assert ids[1].startswith("agentgraph:")


async def test_a_completion_answers_with_the_runs_tokens(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="A plain answer.")
    raw = await _client(api).chat.completions.with_raw_response.create(
        model=f"agentgraph:{spec}",
        messages=[{"role": "user", "content": "What is A? What is B?"}],
        extra_body={"agentgraph": {"approval": "never"}},
    )
    done = raw.parse()
    assert "A plain answer." in (done.choices[0].message.content or "")
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.total_tokens > 0
    thread_id = raw.headers["x-thread-id"]
    extension = _extension(done)
    assert extension["thread_id"] == thread_id
    assert extension["status"] == "done"
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    assert thread["report"]["total_tokens"] == done.usage.total_tokens


async def test_a_streamed_completion_ends_with_usage_and_done(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Streamed words of an answer.")
    stream = await _client(api).chat.completions.create(
        model=f"agentgraph:{spec}",
        messages=[{"role": "user", "content": "What is A? What is B?"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"agentgraph": {"approval": "never", "synthesis": "model"}},
    )
    chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 3  # the synthesis streamed word by word
    assert "Streamed words of an answer." in "".join(texts)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


async def test_a_conversation_resent_with_its_history_stays_on_one_thread(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = _client(api)
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is A?"}]
    one = await client.chat.completions.with_raw_response.create(
        model=f"agentgraph:{spec}", messages=first, extra_body={"agentgraph": {"approval": "never"}}
    )
    reply = one.parse().choices[0].message.content
    history = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And B?"},
    ]
    two = await client.chat.completions.with_raw_response.create(
        model=f"agentgraph:{spec}",
        messages=history,
        extra_body={"agentgraph": {"approval": "never"}},
    )
    thread_id = one.headers["x-thread-id"]
    assert two.headers["x-thread-id"] == thread_id
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        thread = (await http.get(f"/api/v1/threads/{thread_id}")).json()
    assert thread["request"] == "And B?"
    # A header names the thread outright.
    named = await client.chat.completions.with_raw_response.create(
        model=f"agentgraph:{spec}",
        messages=[{"role": "user", "content": "What is C?"}],
        extra_headers={"X-Thread-Id": thread_id},
        extra_body={"agentgraph": {"approval": "never"}},
    )
    assert named.headers["x-thread-id"] == thread_id


async def test_an_approval_is_asked_and_answered_in_the_conversation(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Approved answer.")
    client = _client(api)
    question = [{"role": "user", "content": "What is A? What is B?"}]
    asked = await client.chat.completions.create(
        model=f"agentgraph:{spec}",
        messages=question,
        extra_body={"agentgraph": {"approval": "always"}},
    )
    text = asked.choices[0].message.content or ""
    assert "waits for approval" in text
    assert "`approve`" in text
    extension = _extension(asked)
    assert extension["status"] == "interrupted"
    assert extension["interrupt"]["gate"] == "plan"

    history = [*question, {"role": "assistant", "content": text}]
    unclear = await client.chat.completions.create(
        model=f"agentgraph:{spec}", messages=[*history, {"role": "user", "content": "hmm"}]
    )
    assert "waits for the approval" in (unclear.choices[0].message.content or "")
    approved = await client.chat.completions.create(
        model=f"agentgraph:{spec}", messages=[*history, {"role": "user", "content": "approve"}]
    )
    assert "Approved answer." in (approved.choices[0].message.content or "")
    assert _extension(approved)["status"] == "done"
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        thread = (await http.get(f"/api/v1/threads/{extension['thread_id']}")).json()
    assert [a["decision"] for a in thread["report"]["approvals"]] == ["approve"]


async def test_a_bad_model_and_a_bad_body_get_openais_error_shape(api: RunningServer) -> None:
    client = _client(api)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )
    assert missing.value.code == "model_not_found"
    assert "gpt-4o" in missing.value.message
    with pytest.raises(openai.UnprocessableEntityError) as malformed:
        await client.chat.completions.create(model="agentgraph", messages=[])
    body: Any = malformed.value.body
    assert body["type"] == "invalid_request_error"
    assert "messages" in body["message"]


def test_the_readme_example_runs(api: RunningServer, make_model: MakeModel) -> None:
    """The README's client example, as written but for the address and the model."""
    spec, _ = make_model(reply="The README's answer.")
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- openai-example -->")[1].split("<!-- /openai-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    code = code.replace("http://127.0.0.1:8000", api.base_url)
    code = code.replace('model="agentgraph"', f'model="agentgraph:{spec}"')
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(code, {})  # the README's own lines
    assert "The README's answer." in printed.getvalue()
    assert printed.getvalue().rstrip().endswith(" tokens")
