"""LangServe routes at /agent, for `langserve.RemoteRunnable` clients.

LangServe drops `configurable` keys that the served runnable does not declare, so the runnable
declares `thread_id` and every per-run option as configurable fields; `per_req_config_modifier`
then gives a request without a thread id a fresh one. LangServe cannot send
`Command(resume=...)`, so the input model takes either a question or `{"resume": {...}}`.
Runs go through the same run manager as the native API: the same thread locks and inbox.
For `astream_events` clients the run's events are also replayed as LangChain's own
(`server.langchain_events`: `on_chat_model_stream` per token, `on_retriever_end`).

Errors: once LangServe has begun a stream, anything the runnable raises becomes an opaque
"500 Internal Server Error" event and a traceback in the log. So the config modifier, which
LangServe runs before it answers, also starts the run of `invoke`, `stream` and
`stream_events` requests: an unknown thread, a thread that waits for nothing or is running, a
bad decision, option or model fail there, and `server.errors` answers them with their status
code and message (on the streams as LangServe's `error` event), which `RemoteRunnable` raises
as `httpx.HTTPStatusError`. A failure of the run itself is an `error` event of the run.
"""

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec
from langserve import add_routes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.auth import LOCAL, Principal
from app.errors import AgentGraphError, ConfigError
from graphs.driver import RunOrder
from graphs.runs import RunEvent, new_thread_id
from nodes.context import Context
from server.auth import caller, claim, guard
from server.deps import Services
from server.errors import SSE_ERROR_ROUTES
from server.langchain_events import CallbackEvents
from server.runner import RunHandle
from server.schemas import MAX_QUESTION_CHARS, MAX_THREAD_ID_CHARS, THREAD_ID_PATTERN, Decision

OPTION_NAMES = tuple(f.name for f in fields(Context))
RUN_KEY = "__agent_run"
"""The `configurable` key under which the config modifier hands its started run over."""
WHO_KEY = "__agent_principal"
"""The `configurable` key under which the config modifier hands the request's principal."""
STARTED_EARLY = ("invoke", "stream", "stream_events")
"""Endpoints whose run starts in the config modifier, before LangServe answers."""


class AgentInput(BaseModel):
    """A new question, or the answer to a pending approval: exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(
        default=None, min_length=1, max_length=MAX_QUESTION_CHARS, description="The question."
    )
    resume: Decision | None = Field(
        default=None, description='Answer the pending approval, e.g. {"decision": "approve"}.'
    )

    @model_validator(mode="after")
    def _one_of(self) -> "AgentInput":
        if (self.question is None) == (self.resume is None):
            raise ValueError("give exactly one of 'question' and 'resume'")
        return self


class AgentRunnable(Runnable[AgentInput, RunEvent]):
    """The agent as a runnable: streams the run's events; invoke returns the last one
    (`final`, or `interrupt` when the run waits for a person)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def InputType(self) -> type[AgentInput]:
        return AgentInput

    @property
    def OutputType(self) -> type[dict[str, Any]]:
        return dict

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        specs = [
            ConfigurableFieldSpec(
                id="thread_id",
                annotation=str | None,
                name="Thread id",
                description="The thread to run or resume; a new one when unset.",
                default=None,
            )
        ]
        for f in fields(Context):
            specs.append(
                ConfigurableFieldSpec(
                    id=f.name,
                    annotation=f.type | None,  # type: ignore[operator]
                    name=f.name,
                    description=f"Per-run option '{f.name}' (as the CLI's --{f.name}).",
                    default=None,
                )
            )
        return specs

    def invoke(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> RunEvent:
        raise AgentGraphError("the served agent runs asynchronously: use ainvoke or astream")

    def stream(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[RunEvent]:
        raise AgentGraphError("the served agent runs asynchronously: use ainvoke or astream")

    async def ainvoke(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> RunEvent:
        last: RunEvent = {}
        async for event in self.astream(input, config, **kwargs):
            last = event
        return last

    async def astream(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[RunEvent]:
        async def one() -> AsyncIterator[AgentInput]:
            yield input

        async for event in self._atransform_stream_with_config(
            one(), self._events, config, **kwargs
        ):
            yield event

    async def _events(
        self,
        inputs: AsyncIterator[AgentInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[RunEvent]:
        async for raw in inputs:
            item = raw if isinstance(raw, AgentInput) else AgentInput.model_validate(raw)
            configurable = dict(config.get("configurable") or {})
            handle = configurable.get(RUN_KEY)
            if not isinstance(handle, RunHandle):  # batch, or a call from in-process code
                configurable.setdefault("thread_id", new_thread_id())
                who = configurable.get(WHO_KEY)
                handle = await start_run(
                    self.app.state.services,
                    item,
                    configurable,
                    who if isinstance(who, Principal) else LOCAL,
                )
            thread_id = handle.thread_id
            replay = (
                CallbackEvents(run_manager, thread_id=thread_id, model=handle.model)
                if CallbackEvents.wanted(run_manager)
                else None
            )
            yield {"event": "metadata", "thread_id": thread_id, "run_id": handle.run_id}
            try:
                while (event := await handle.queue.get()) is not None:
                    if replay is not None:
                        await replay.feed(event)
                    if event["event"] in ("final", "error"):
                        event = {**event, "thread_id": thread_id}
                    yield event
            finally:
                if replay is not None:
                    await replay.close()


async def start_run(
    svc: Services, item: AgentInput, configurable: dict[str, Any], who: Principal
) -> RunHandle:
    """Start the run an input asks for, with the options found in `configurable`.

    Raises:
        AgentGraphError: the run cannot start (see `RunManager.start`).
    """
    thread_id = str(configurable.get("thread_id") or new_thread_id())
    if len(thread_id) > MAX_THREAD_ID_CHARS or not re.match(THREAD_ID_PATTERN, thread_id):
        raise ConfigError(
            f"bad thread_id: 1 to {MAX_THREAD_ID_CHARS} characters, no control characters"
        )
    overrides = {k: configurable[k] for k in OPTION_NAMES if configurable.get(k) is not None}
    if item.question is not None:
        await claim(svc, who, thread_id)
        order = RunOrder(thread_id=thread_id, request=item.question, options=overrides)
    else:
        assert item.resume is not None
        await guard(svc, who, thread_id, "approvals")
        decision = {**item.resume.model_dump(), "by": who.label}
        order = RunOrder(thread_id=thread_id, decision=decision, options=overrides)
    return await svc.runs.start(order, who)


async def _config_modifier(config: dict[str, Any], request: Request) -> dict[str, Any]:
    """Give every LangServe request a thread id, so the graph's checkpointer can store it,
    and start the run of a single input here, where its errors can still become a status."""
    configurable = dict(config.get("configurable") or {})
    configurable.pop(RUN_KEY, None)
    configurable[WHO_KEY] = await caller(request)  # set by the routes' dependency already
    if not configurable.get("thread_id"):
        configurable["thread_id"] = new_thread_id()
    if request.url.path.rstrip("/").rsplit("/", 1)[-1] in STARTED_EARLY:
        body = await request.json()  # LangServe has read it already: this is its cached copy
        try:
            item = AgentInput.model_validate(body.get("input") if isinstance(body, dict) else None)
        except ValidationError:
            pass  # LangServe validates the input next, and answers 422
        else:
            configurable[RUN_KEY] = await start_run(
                request.app.state.services, item, configurable, configurable[WHO_KEY]
            )
    return {**config, "configurable": configurable}


async def checked_config(request: Request) -> None:
    """Refuse, with a 422 that says so, a `config` LangServe cannot read (it would raise a
    TypeError, a 500): an object, a JSON string or absent; for batch, also a list of those,
    and batch `inputs` that are no list.

    Raises:
        ConfigError: any other `config`.
    """
    if request.method != "POST":
        return
    try:
        body = await request.json()  # kept on the request: LangServe reads it again
    except ValueError:
        return  # LangServe answers 422 itself
    if not isinstance(body, dict):
        return
    batch = request.url.path.rstrip("/").endswith("/batch")
    if batch and "inputs" in body and not isinstance(body["inputs"], list):
        raise ConfigError(f"inputs: must be a list, not {type(body['inputs']).__name__}")
    if "config" not in body:
        return
    config = body["config"]
    readable = (dict, str)
    if isinstance(config, readable):
        return
    if batch and isinstance(config, list) and all(isinstance(c, readable) for c in config):
        return
    expected = "an object (or, for batch, a list of objects)" if batch else "an object"
    raise ConfigError(f"config: must be {expected}, not {type(config).__name__}")


ERROR_CODES = (400, 401, 403, 404, 409, 413, 422, 429, 503)
"""The error statuses a LangServe route may answer, each with `server.schemas.ErrorBody`."""
STREAM_ENDPOINTS = ("stream", "stream_events")
"""LangServe's endpoints that answer with server-sent events."""


def document_langserve(app: FastAPI, path: str) -> None:
    """Make the OpenAPI of LangServe's routes say what they answer: `text/event-stream` from
    the stream endpoints (it documents JSON), and this server's error body for every error
    status (it documents FastAPI's default 422 only)."""
    make_schema = app.openapi
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_schema()
        for route, operations in schema["paths"].items():
            if not route.startswith(f"{path}/"):
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code in ERROR_CODES:
                    responses[str(code)] = {
                        "description": "Error",
                        "content": {"application/json": {"schema": error_ref}},
                    }
        for name in STREAM_ENDPOINTS:
            operation = schema["paths"].get(f"{path}/{name}", {}).get("post")
            if operation is not None:
                # A failure after the stream started is an `error` event on this 200.
                operation["responses"]["200"]["content"] = {"text/event-stream": {}}
        app.openapi_schema = schema
        return schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to change it


def add_agent_routes(app: FastAPI) -> None:
    """Add invoke, batch, stream, stream_events, the schemas and the playground at /agent."""
    path = "/agent"
    add_routes(
        app,
        AgentRunnable(app),
        path=path,
        input_type=AgentInput,
        output_type=dict,
        per_req_config_modifier=_config_modifier,
        # 401 before anything else, as on every route; then a config LangServe can read.
        dependencies=[Depends(caller), Depends(checked_config)],
        enabled_endpoints=[
            "invoke",
            "batch",
            "stream",
            "stream_events",
            "input_schema",
            "output_schema",
            "config_schema",
            "playground",
        ],
    )
    # A RemoteRunnable reads a stream's failure only from an `error` event (it raises on the
    # status of a failed response without reading its body): see server.errors.
    setattr(
        app.state,
        SSE_ERROR_ROUTES,
        frozenset(
            route.path
            for route in app.routes
            if isinstance(route, APIRoute)
            and route.path.startswith(f"{path}/")
            and route.path.endswith(tuple(f"/{name}" for name in STREAM_ENDPOINTS))
        ),
    )
    document_langserve(app, path)
