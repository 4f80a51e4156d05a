"""Run a thread with LangGraph's own stream modes, and describe its state as LangGraph's
server does: what the LangGraph Agent API (`server.agent_api`) streams and returns.

The native surfaces stream agentgraph's events (`graphs.runs`); this streams what
`langgraph_sdk` and `RemoteGraph` ask for: `values`, `updates`, `custom` (agentgraph's events
themselves), `messages-tuple` (each model token with its node's metadata), `messages` (the
message so far, as `messages/partial`), `debug`, `checkpoints`, `tasks` and `events` (the
callbacks' events, `astream_events` v2), named and shaped as LangGraph's server names them.
"""

import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from datetime import datetime
from typing import Any, cast

from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message
from langchain_core.runnables import RunnableConfig
from langgraph.types import Interrupt, StateSnapshot, StreamMode
from pydantic import BaseModel

from app.checkpoint.saver import Saver
from graphs.agent import AgentGraph
from graphs.observe import RunObservation, run_kind
from graphs.run_records import RecordKeeper, RunRecorder
from graphs.runs import KEPT_AT, RUN_ID_KEY, graph_input, interrupt_event, thread_config
from nodes.context import Context
from nodes.schemas import ApprovalDecision

logger = logging.getLogger(__name__)

PREGEL_MODES = frozenset({"values", "updates", "custom", "debug", "checkpoints", "tasks"})
MODES = frozenset({*PREGEL_MODES, "messages", "messages-tuple", "events"})
"""Every stream mode served."""
StreamPart = tuple[str, Any]
"""An SSE event of the Agent API: its name (a mode, `|`-joined with a subgraph's namespace)
and its data."""


def jsonable(value: Any) -> Any:
    """`value` as JSON data: messages and other models dumped, interrupts as
    `{"id", "value"}`, anything unknown as its string."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Interrupt):
        return {"id": value.id, "value": jsonable(value.value)}
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def checkpoint_of(config: RunnableConfig | None) -> dict[str, Any] | None:
    """The `checkpoint` object of LangGraph's API for a checkpoint's config."""
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("checkpoint_id"):
        return None
    return {
        "thread_id": configurable["thread_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable["checkpoint_id"],
    }


def thread_state(snapshot: StateSnapshot) -> dict[str, Any]:
    """A snapshot as LangGraph's server shows a thread's state (`ThreadState`)."""
    return {
        "values": jsonable(snapshot.values),
        "next": list(snapshot.next),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "path": jsonable(task.path),
                "error": jsonable(task.error),
                "interrupts": jsonable(task.interrupts),
                "checkpoint": None,
                "state": None,
                "result": jsonable(getattr(task, "result", None)),
            }
            for task in snapshot.tasks
        ],
        "metadata": jsonable(snapshot.metadata),
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint_of(snapshot.config),
        "parent_checkpoint": checkpoint_of(snapshot.parent_config),
        "interrupts": jsonable(snapshot.interrupts),
    }


def _name(mode: str, namespace: Sequence[str]) -> str:
    return f"{mode}|{'|'.join(namespace)}" if namespace else mode


class _Messages:
    """The `messages` mode's bookkeeping: each message's chunks so far, by id."""

    def __init__(self) -> None:
        self.seen: dict[str, BaseMessage] = {}

    def parts(self, message: BaseMessage, metadata: dict[str, Any]) -> list[StreamPart]:
        key = message.id or ""
        found: list[StreamPart] = []
        before = self.seen.get(key)
        if before is None:
            found.append(("messages/metadata", {key: {"metadata": jsonable(metadata)}}))
        if isinstance(before, BaseMessageChunk) and isinstance(message, BaseMessageChunk):
            self.seen[key] = before + message
        else:
            self.seen[key] = message
        whole = self.seen[key]
        if isinstance(message, BaseMessageChunk):
            found.append(("messages/partial", [jsonable(whole)]))
        else:
            found.append(("messages/complete", [jsonable(message_chunk_to_message(whole))]))
        return found


def _parts(
    mode: str, chunk: Any, namespace: Sequence[str], wanted: set[str], messages: _Messages
) -> list[StreamPart]:
    """The SSE events one chunk of LangGraph's stream makes."""
    if mode == "messages":
        message, metadata = chunk
        if "messages-tuple" in wanted:
            return [(_name("messages", namespace), [jsonable(message), jsonable(metadata)])]
        return messages.parts(message, metadata)
    if mode in wanted:
        return [(_name(mode, namespace), jsonable(chunk))]
    return []


async def stream_modes(
    graph: AgentGraph,
    *,
    thread_id: str,
    context: Context,
    modes: Sequence[str],
    subgraphs: bool = False,
    request: str | None = None,
    resume: ApprovalDecision | None = None,
    proceed: bool = False,
    new_thread: bool = False,
    run_id: str | None = None,
) -> AsyncIterator[StreamPart]:
    """Run (or resume, or continue) a thread and yield what the stream `modes` carry, named
    as LangGraph's server names them. Closing the iterator stops the run (the thread keeps
    every finished super-step). `updates` are always streamed to LangGraph (an interrupt is
    one), but yielded only when asked for; an interrupt is then yielded as `values`, as
    LangGraph's server does. The run is observed as `graphs.runs.run_events` observes its
    runs (`graphs.observe`), and, with the Postgres saver, recorded for replay as those are
    (`graphs.run_records`), as it goes and when it ends, fails or is stopped: agentgraph's
    events are always streamed (`custom`) for that, and yielded only when asked for."""
    del new_thread  # LangGraph looks the thread up either way
    wanted = set(modes)
    named = {m for m in wanted if m in PREGEL_MODES} | {"updates", "custom"}
    if wanted & {"messages", "messages-tuple"}:
        named.add("messages")
    pregel = cast(list[StreamMode], sorted(named))
    payload = graph_input(request, resume)
    config = thread_config(thread_id)
    if run_id is not None:
        config["metadata"] = {RUN_ID_KEY: run_id}
    messages = _Messages()
    observation = RunObservation(thread_id=thread_id, run_id=run_id, kind=run_kind(request, resume))
    recorder = RunRecorder()
    saver = graph.checkpointer if isinstance(graph.checkpointer, Saver) else None
    keeper: RecordKeeper | None = None  # started with the run, closed at its end

    def see(mode: str, chunk: Any, namespace: Sequence[str]) -> None:
        if mode == "custom" and not namespace and isinstance(chunk, dict) and "event" in chunk:
            recorder.see(chunk)
            if keeper is not None and chunk["event"] in KEPT_AT:
                keeper.nudge()

    async def parts() -> AsyncGenerator[StreamPart, None]:
        if "events" in wanted:
            events = cast(
                AsyncGenerator[dict[str, Any], None],
                graph.astream_events(
                    payload, config, context=context, version="v2", stream_mode=pregel
                ),
            )
            async with aclosing(events):
                async for event in observation.within(events):
                    if event["event"] == "on_chain_stream" and not event.get("parent_ids"):
                        mode, chunk = event["data"]["chunk"]
                        if mode == "updates":
                            observation.see_update(chunk)
                        see(mode, chunk, ())
                        for part in _interrupt_as_values(mode, chunk, (), wanted, messages):
                            yield part
                    else:
                        yield "events", jsonable(event)
            return
        steps = cast(
            AsyncGenerator[tuple[Any, ...], None],
            graph.astream(
                payload,
                config,
                context=context,
                stream_mode=pregel,
                subgraphs=subgraphs,
            ),
        )
        async with aclosing(steps):
            async for item in observation.within(steps):
                namespace, mode, chunk = item if subgraphs else ((), *item)
                if mode == "updates" and not namespace:
                    observation.see_update(chunk)
                see(mode, chunk, namespace)
                for part in _interrupt_as_values(mode, chunk, namespace, wanted, messages):
                    yield part

    with observation.ending():
        try:
            if saver is not None:
                keeper = RecordKeeper(saver.conn, thread_id, observation.run_id, recorder)
            async with aclosing(parts()) as streamed:
                async for part in streamed:
                    yield part
            if saver is not None and recorder.count:
                await _note_interrupt(graph, saver, thread_id, recorder)
        except Exception as exc:
            recorder.see({"event": "error", "type": type(exc).__name__, "message": str(exc)})
            raise
        finally:
            if keeper is not None:
                await keeper.close()


async def _note_interrupt(
    graph: AgentGraph, saver: Saver, thread_id: str, recorder: RunRecorder
) -> None:
    """Record the interrupt of a run that streamed to it, whose event LangGraph's stream
    carries only as an update."""
    await saver.flush(thread_id)
    if not any(e[1].get("event") in ("final", "error") for e in recorder.record()["events"]):
        event = interrupt_event(await graph.aget_state(thread_config(thread_id)), thread_id)
        if event is not None:
            recorder.see(event)


def _interrupt_as_values(
    mode: str, chunk: Any, namespace: Sequence[str], wanted: set[str], messages: _Messages
) -> list[StreamPart]:
    if (
        mode == "updates"
        and "updates" not in wanted
        and isinstance(chunk, dict)
        and chunk.get("__interrupt__")
    ):
        return [(_name("values", namespace), jsonable(chunk))]
    return _parts(mode, chunk, namespace, wanted, messages)
