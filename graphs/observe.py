"""Telemetry of runs and nodes: the run's span, its nodes' spans, and their metrics.

A run (`graphs.runs.run_events`, `graphs.modes.stream_modes`) is observed by a
`RunObservation`: its span is the root of the run's trace, and while the run works the span
is current and the thread and run ids are bound for logging (`app.telemetry.logs`), so the
node tasks LangGraph starts, the parallel `Send` workers too, inherit both. Each node is
wrapped where the graph is assembled (`observed`): one span per execution (per attempt),
under the run's, with the tokens and cost the node's usage records account for, which also
feed the model counters and the run's totals. Model calls, retrievals and tool calls open
their own spans under their node's (`nodes.llm`, `nodes.rag`, `nodes.tools`).
"""

import functools
import inspect
import logging
import time
import uuid
from asyncio import CancelledError
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, TypeVar, cast

from langgraph.errors import GraphBubbleUp
from langgraph.types import Command
from opentelemetry import context as otel_context
from opentelemetry import trace

from app.accounting import Tokens, UsageRecord
from app.telemetry.logs import bind_run
from app.telemetry.metrics import metrics
from app.telemetry.tracing import (
    INTERRUPTED,
    NODE,
    RUN_ID,
    STATUS,
    STEP_ID,
    THREAD_ID,
    failed,
    set_usage,
    span,
    start_span,
)

logger = logging.getLogger(__name__)

RunKind = Literal["request", "resume", "continue"]
ENDINGS = frozenset({"done", "rejected", "failed", "interrupted", "cancelled"})
"""How a run ends, as `agentgraph_runs_finished_total` counts it (anything else: unknown)."""
RUN_KIND = "agentgraph.run_kind"
T = TypeVar("T")
NodeAction = TypeVar("NodeAction", bound=Callable[..., Awaitable[Any]])

_observed: ContextVar["RunObservation | None"] = ContextVar("agentgraph_run", default=None)


def run_kind(request: str | None, resume: object) -> RunKind:
    """What a run was started for: a new request, a resume value, or to continue."""
    if request is not None:
        return "request"
    return "resume" if resume is not None else "continue"


class RunObservation:
    """One run's span, totals and outcome while it runs; `end` closes it (once)."""

    def __init__(self, *, thread_id: str, run_id: str | None, kind: RunKind) -> None:
        self.thread_id = thread_id
        self.run_id = run_id or uuid.uuid4().hex
        self.kind = kind
        self.started = time.perf_counter()
        self.span = start_span("run", {THREAD_ID: thread_id, RUN_ID: self.run_id, RUN_KIND: kind})
        self.context = trace.set_span_in_context(self.span)
        self.tokens = Tokens()
        self.cost = 0.0
        self.status: str | None = None
        self.error: str | None = None
        self.ended = False
        metrics().runs_started.labels(kind).inc()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make the run's span current and bind its ids for logging, in the block."""
        token = otel_context.attach(self.context)
        observing = _observed.set(self)
        try:
            with bind_run(self.thread_id, self.run_id):
                yield
        finally:
            _observed.reset(observing)
            otel_context.detach(token)

    @contextmanager
    def ending(self) -> Iterator[None]:
        """End the observation when the block ends, with the exception that ends it if any."""
        try:
            yield
        except BaseException as exc:
            self.end(exc)
            raise
        self.end(None)

    @contextmanager
    def running(self) -> Iterator["RunObservation"]:
        """`active` and `ending` at once: for a run driven by one coroutine."""
        with self.ending(), self.active():
            yield self

    async def within(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """Yield `items`, with the run `active` only while the next one is produced: for a
        run driven by an async generator, whose consumer runs between its items."""
        while True:
            with self.active():
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
            yield item

    def see(self, event: dict[str, Any]) -> None:
        """Learn how the run ends from one of its events (`graphs.runs`)."""
        kind = event.get("event")
        if kind == "final":
            self.status = str(event.get("status") or "done")
        elif kind == "interrupt":
            self.status = "interrupted"
        elif kind == "error":
            self.status = "cancelled" if event.get("type") == "RunStopped" else "failed"
            self.error = f"{event.get('type')}: {event.get('message')}"

    def see_update(self, chunk: object) -> None:
        """Learn how the run ends from a chunk of LangGraph's `updates` stream."""
        if not isinstance(chunk, dict):
            return
        if chunk.get("__interrupt__"):
            self.status = "interrupted"
            return
        for update in chunk.values():
            if isinstance(update, dict) and isinstance(update.get("status"), str):
                self.status = update["status"]

    def add(self, records: list[UsageRecord]) -> None:
        """Count a node's usage records into the run's totals."""
        for record in records:
            self.tokens = self.tokens + Tokens(record["input_tokens"], record["output_tokens"])
            self.cost += record["cost"]

    def end(self, exc: BaseException | None) -> None:
        """End the span and count the run as finished."""
        if self.ended:
            return
        self.ended = True
        status = self.status
        if isinstance(exc, CancelledError | GeneratorExit):
            status = "cancelled"
        elif exc is not None:
            status = "failed"
            failed(self.span, exc)
        status = status if status in ENDINGS else "unknown"
        if status == "failed" and exc is None:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, self.error))
        self.span.set_attribute(STATUS, status)
        set_usage(self.span, self.tokens, self.cost)
        self.span.end()
        elapsed = time.perf_counter() - self.started
        measured = metrics()
        measured.runs_finished.labels(status).inc()
        measured.run_duration.labels(status).observe(elapsed)


def _step_id(payload: object) -> str | None:
    """The step a worker's input (`nodes.state.WorkerInput`) is for, if it is one."""
    step = payload.get("step") if isinstance(payload, dict) else None
    return str(step["id"]) if isinstance(step, dict) and "id" in step else None


def _usage_of(update: object) -> list[UsageRecord]:
    """The usage records a node's update carries."""
    if isinstance(update, Command):
        update = update.update
    records = update.get("usage") if isinstance(update, dict) else None
    return list(records) if isinstance(records, list) else []


def observed(node: str, action: NodeAction) -> NodeAction:
    """Wrap an async node in a span of its own and its metrics. The wrapper has the node's
    signature, so LangGraph injects what the node asks for (its runtime, its config) and
    infers the same input schema."""
    if not inspect.iscoroutinefunction(action) and not inspect.iscoroutinefunction(
        getattr(action, "__call__", None)  # noqa: B004 - a callable object's own method
    ):
        raise TypeError(f"node {node!r} is not async: only async nodes are observed")

    @functools.wraps(action)
    async def observe(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        step_id = _step_id(args[0] if args else None)
        with span(
            f"node {node}", {NODE: node, STEP_ID: step_id}, benign=(GraphBubbleUp,)
        ) as current:
            try:
                update = await action(*args, **kwargs)
            except GraphBubbleUp:
                current.set_attribute(INTERRUPTED, True)  # waits for a person: not a failure
                raise
            finally:
                metrics().node_duration.labels(node).observe(time.perf_counter() - started)
            records = _usage_of(update)
            if records:
                tokens = Tokens(
                    sum(r["input_tokens"] for r in records),
                    sum(r["output_tokens"] for r in records),
                )
                set_usage(current, tokens, sum(r["cost"] for r in records))
                metrics().count_usage(records)
                run = _observed.get()
                if run is not None:
                    run.add(records)
            return update

    return cast(NodeAction, observe)
