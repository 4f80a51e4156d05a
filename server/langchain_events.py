"""A run's events as LangChain callback events, for LangServe's `astream_events` clients.

A served run executes in a task of its own (`server.runner`), outside the LangServe request's
callbacks, so LangChain never sees its model calls. Clients of `RemoteRunnable.astream_events`
filter the standard events (`on_chat_model_stream` for tokens, `on_retriever_end` for
documents): this replays the run's own events onto the request's callback manager as
children of the served runnable's run, as the calls would have been reported in process.

- The `delta`s of one node and step are one chat-model run: started at its first delta,
  each delta a token (`on_chat_model_stream`), ended (`on_chat_model_end`, with the text)
  when the step's result or the run's end arrives. Parallel steps are parallel runs.
- A `retrieval` is a retriever run that starts and ends at once, with the passages found.

Every run is tagged `agentgraph:node:NODE` and `agentgraph:step:STEP`, with `langgraph_node`,
`step_id` and `thread_id` in its metadata, as the in-process calls are (`nodes.llm`).
"""

import uuid
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, AsyncCallbackManagerForChainRun
from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult

from graphs.runs import RunEvent

Key = tuple[str, str | None]
"""A model call's node and step."""


class CallbackEvents:
    """Replays one run's events onto a chain run's callback manager."""

    def __init__(
        self, run_manager: AsyncCallbackManagerForChainRun, *, thread_id: str, model: str
    ) -> None:
        self.children = run_manager.get_child()
        self.thread_id = thread_id
        self.model = model
        self.open: dict[Key, tuple[AsyncCallbackManagerForLLMRun, list[str]]] = {}

    @staticmethod
    def wanted(run_manager: AsyncCallbackManagerForChainRun) -> bool:
        """Whether anyone listens (a plain `stream` has no handlers: nothing to replay)."""
        return bool(run_manager.handlers or run_manager.inheritable_handlers)

    def _labelled(self, node: str, step_id: str | None, **metadata: Any) -> AsyncCallbackManager:
        """The child callback manager, with this call's tags and metadata."""
        manager = self.children.copy()
        manager.add_tags(
            [f"agentgraph:node:{node}"] + ([f"agentgraph:step:{step_id}"] if step_id else []),
            inherit=False,
        )
        manager.add_metadata(
            {"langgraph_node": node, "step_id": step_id, "thread_id": self.thread_id, **metadata},
            inherit=False,
        )
        return manager

    async def feed(self, event: RunEvent) -> None:
        """Replay one of the run's events, if LangChain has a counterpart for it."""
        kind = event["event"]
        if kind == "delta":
            await self._token(event["node"], event.get("step_id"), event["text"])
        elif kind == "step_result":
            step_id = event["result"]["step_id"]
            for key in [k for k in self.open if k[1] == step_id]:
                await self._end(key)
        elif kind == "retrieval":
            await self._retrieval(event)
        elif kind in ("final", "error", "interrupt"):
            await self.close()

    async def close(self) -> None:
        """End every model run still open (the run ended, or its stream did)."""
        for key in list(self.open):
            await self._end(key)

    async def _token(self, node: str, step_id: str | None, text: str) -> None:
        key = (node, step_id)
        if key not in self.open:
            [llm_run] = await self._labelled(node, step_id).on_chat_model_start(
                {"name": self.model},
                [[]],
                run_id=uuid.uuid4(),
                name=self.model,
                invocation_params={"model": self.model},
            )
            self.open[key] = (llm_run, [])
        llm_run, parts = self.open[key]
        parts.append(text)
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        await llm_run.on_llm_new_token(text, chunk=chunk)

    async def _end(self, key: Key) -> None:
        llm_run, parts = self.open.pop(key)
        message = AIMessage(content="".join(parts))
        await llm_run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]))

    async def _retrieval(self, event: RunEvent) -> None:
        manager = self._labelled("rag", event.get("step_id"), collection=event.get("collection"))
        retriever = await manager.on_retriever_start(
            {"name": "agentgraph"},
            str(event.get("query", "")),
            run_id=uuid.uuid4(),
            name=f"collection:{event.get('collection')}",
        )
        documents = [
            Document(
                page_content=p.get("text", ""),
                id=p["chunk_id"],
                metadata={"chunk_id": p["chunk_id"], "source": p["source"], "score": p["score"]},
            )
            for p in event.get("passages", [])
        ]
        await retriever.on_retriever_end(documents)
