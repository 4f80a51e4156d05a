"""The replay of a run's events as LangChain callback events (`server.langchain_events`),
seen through `astream_events` as a LangServe client sees it."""

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig

from server.langchain_events import CallbackEvents

EVENTS: list[dict[str, Any]] = [
    {"event": "retrieval", "step_id": "s1", "collection": "zoo", "query": "okapis?",
     "chunks": 1, "chunk_ids": ["c1"], "sources": ["zoo.md"],
     "passages": [
         {"chunk_id": "c1", "source": "zoo.md", "score": 0.5, "text": "Okapis eat leaves."}
     ]},
    {"event": "delta", "node": "rag", "step_id": "s1", "text": "They eat "},
    {"event": "delta", "node": "reasoning", "step_id": "s2", "text": "Blue "},
    {"event": "delta", "node": "rag", "step_id": "s1", "text": "leaves."},
    {"event": "step_result", "result": {"step_id": "s1"}},
    {"event": "delta", "node": "reasoning", "step_id": "s2", "text": "light."},
    {"event": "final", "status": "done"},
]  # fmt: skip


class Replay(Runnable[None, dict[str, Any]]):
    """Streams EVENTS, replaying them onto its own run's callbacks as the served agent does."""

    def invoke(self, input: None, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def astream(
        self, input: None, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        async def one() -> AsyncIterator[None]:
            yield None

        async for event in self._atransform_stream_with_config(one(), self._events, config):
            yield event

    async def _events(
        self,
        inputs: AsyncIterator[None],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[dict[str, Any]]:
        async for _ in inputs:
            assert CallbackEvents.wanted(run_manager)
            replay = CallbackEvents(run_manager, thread_id="t1", model="local")
            for event in EVENTS:
                await replay.feed(event)
                yield event


async def test_parallel_steps_are_parallel_model_runs_and_retrieval_a_retriever_run() -> None:
    events = [e async for e in Replay().astream_events(None, version="v2")]
    names = [e["event"] for e in events]

    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    by_step: dict[str, list[str]] = {}
    for e in tokens:
        by_step.setdefault(e["metadata"]["step_id"], []).append(e["data"]["chunk"].content)
    assert by_step == {"s1": ["They eat ", "leaves."], "s2": ["Blue ", "light."]}
    assert {e["metadata"]["thread_id"] for e in tokens} == {"t1"}
    ends = {e["metadata"]["step_id"]: e for e in events if e["event"] == "on_chat_model_end"}
    assert ends["s1"]["data"]["output"].content == "They eat leaves."
    assert ends["s2"]["data"]["output"].content == "Blue light."
    # s1 ends with its step result, before s2's last token; s2 at the run's end.
    assert names.index("on_chat_model_end") < max(
        i for i, e in enumerate(events) if e["event"] == "on_chat_model_stream"
    )
    [retrieved] = [e for e in events if e["event"] == "on_retriever_end"]
    [document] = retrieved["data"]["output"]
    assert document.page_content == "Okapis eat leaves."
    assert document.metadata == {"chunk_id": "c1", "source": "zoo.md", "score": 0.5}
    assert retrieved["metadata"]["collection"] == "zoo"
    assert "agentgraph:step:s1" in retrieved["tags"]
