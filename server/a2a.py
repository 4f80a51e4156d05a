"""The A2A surface (agent-to-agent protocol 1.0, with 0.3 clients understood too), on the
A2A Python SDK: other agents find ours by its card and send it tasks.

- `GET /.well-known/agent-card.json`: the card: the JSON-RPC endpoint `/a2a`, streaming,
  one skill, and, with authentication on, the Bearer and `X-API-Key` schemes it takes.
- `POST /a2a`: JSON-RPC (`SendMessage`, `SendStreamingMessage`, `GetTask`, `ListTasks`,
  `CancelTask`, `SubscribeToTask`; and the 0.3 names, `message/send` and the rest). The SDK's
  request handler keeps each task in Postgres (its `DatabaseTaskStore`, in the table
  `agentgraph_a2a_tasks`, owned by the key's tenant), so a restarted server still answers.
- **A task is one run on one thread;** the `contextId` is the thread, so later messages in
  the same context continue it. The answer streams as chunks of the `answer` artifact, plan
  updates as `WORKING` status messages, citations as a `citations` data artifact.
- **Approvals as `INPUT_REQUIRED`:** a run that stops at an approval puts its task there, with
  the plan in the status message (text and the interrupt as a data part). The next message on
  that task resumes it: `approve`, `reject: <reason>`, or a data part
  `{"decision": ..., "reason": ..., "plan": ...}`, the same resume value as everywhere else.
- `CancelTask` stops the run at its next super-step, on whichever server runs it.

Each turn is `server.turns`' (the same as `/v1`'s); this module only maps it to A2A.
"""

import functools
import json
import logging
import uuid
from typing import Any

import psycopg
from a2a.auth.user import User
from a2a.helpers.proto_helpers import get_data_parts, new_data_part, new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.models import create_task_model
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.tasks import DatabaseTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    Message,
    Role,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    TaskState,
)
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf.json_format import MessageToDict
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from starlette.requests import Request as StarletteRequest

from app.auth import Principal
from app.errors import AgentGraphError
from graphs.multitask import StopRequest, send_stop
from server.auth import caller
from server.deps import Services, result_of
from server.runner import RunHandle
from server.schemas import RunOptions, RunResult
from server.turns import HOW_TO_ANSWER, content_of, decision_of, rest_of, start_turn

logger = logging.getLogger(__name__)

PATH = "/a2a"
CONTENT_TYPE_NOT_SUPPORTED = -32005
"""A2A's JSON-RPC code for content it does not take (spec 5.4)."""
TASKS_TABLE = "agentgraph_a2a_tasks"
ANSWER_ARTIFACT = "answer"
CITATIONS_ARTIFACT = "citations"
router = APIRouter(tags=["a2a"])


class TenantUser(User):
    """The key's tenant, as the SDK's user: its tasks are stored under the tenant's name."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.principal.tenant


class _ContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, with the request's principal (authenticated before)."""

    def build(self, request: StarletteRequest) -> ServerCallContext:
        context = super().build(request)
        principal: Principal = request.state.principal
        context.user = TenantUser(principal)
        context.state["principal"] = principal
        return context


def _agent_message(context: RequestContext, text: str, data: Any = None) -> Message:
    parts = [new_text_part(text)]
    if data is not None:
        parts.append(new_data_part(json.loads(json.dumps(data, default=str))))
    return Message(
        role=Role.ROLE_AGENT,
        parts=parts,
        message_id=uuid.uuid4().hex,
        task_id=context.task_id,
        context_id=context.context_id,
    )


def _reply_of(context: RequestContext) -> str:
    """What the user's message says, as text: a data part's resume value in the words a
    reply takes (`approve`, `reject: <reason>`, a plan as JSON), else the message's text."""
    message = context.message
    for data in get_data_parts(message.parts) if message is not None else []:
        if not isinstance(data, dict) or "decision" not in data:
            continue
        if data["decision"] == "reject":
            return f"reject: {data.get('reason') or ''}".strip()
        if data["decision"] == "edit" and isinstance(data.get("plan"), dict):
            return json.dumps(data["plan"])
        return str(data["decision"])
    return context.get_user_input()


def _options_of(context: RequestContext) -> RunOptions | None:
    """The run options (approval, mode, collection, ...) under `agentgraph` in the message's
    metadata or the request's.

    Raises:
        ValidationError: they are no run options.
    """
    message = context.message
    found = (MessageToDict(message.metadata) if message is not None else {}).get("agentgraph")
    found = found or context.metadata.get("agentgraph")
    return RunOptions.model_validate(found) if found else None


def _updater(context: RequestContext, event_queue: EventQueue) -> TaskUpdater:
    """The task's updater; the SDK gives every request its task and context ids."""
    if context.task_id is None or context.context_id is None:
        raise RuntimeError("an A2A request came without a task or context id")
    return TaskUpdater(event_queue, context.task_id, context.context_id)


class AgentGraphExecutor(AgentExecutor):
    """Runs a task's turn on the agent and reports it as A2A events."""

    def __init__(self, services: Services) -> None:
        self.svc = services

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        principal: Principal = context.call_context.state["principal"]
        updater = _updater(context, event_queue)
        if context.current_task is None:
            history = [context.message] if context.message is not None else []
            await event_queue.enqueue_event(
                new_task(
                    updater.task_id,
                    updater.context_id,
                    TaskState.TASK_STATE_SUBMITTED,
                    history=history,
                )
            )
        reply = _reply_of(context)
        waiting = (
            context.current_task is not None
            and context.current_task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        )
        if waiting and decision_of(reply) is None:
            await updater.requires_input(
                _agent_message(context, f"The plan still waits for approval. {HOW_TO_ANSWER}")
            )
            return
        try:
            options = _options_of(context)
        except ValidationError as exc:
            await updater.failed(_agent_message(context, f"bad run options: {exc}"))
            return
        try:
            started = await start_turn(
                self.svc, principal, updater.context_id, reply, options=options, spec=None
            )
        except AgentGraphError as exc:  # an unknown or busy thread, a key over its limits
            await updater.failed(_agent_message(context, f"{type(exc).__name__}: {exc}"))
            return
        if isinstance(started, str):
            await updater.requires_input(_agent_message(context, started))
            return
        await updater.start_work()
        await self._report(context, updater, started)

    async def _report(
        self, context: RequestContext, updater: TaskUpdater, handle: RunHandle
    ) -> None:
        streamed = ""
        answering: str | None = None
        while (event := await handle.queue.get()) is not None:
            kind = event["event"]
            if kind == "plan_update":
                steps = (event.get("plan") or {}).get("steps", [])
                answering = steps[0]["id"] if len(steps) == 1 else None
                plan = "; ".join(str(s.get("instruction", "")) for s in steps)
                await updater.update_status(
                    TaskState.TASK_STATE_WORKING, _agent_message(context, f"Plan: {plan}")
                )
            elif kind == "delta" and (
                event.get("node") == "synthesize"
                or (answering is not None and event.get("step_id") == answering)
            ):
                text = str(event["text"])
                await updater.add_artifact(
                    [new_text_part(text)],
                    artifact_id=ANSWER_ARTIFACT,
                    name=ANSWER_ARTIFACT,
                    append=bool(streamed),
                    last_chunk=False,
                )
                streamed += text
        result = await result_of(self.svc, handle)
        await self._finish(context, updater, result, streamed)

    async def _finish(
        self, context: RequestContext, updater: TaskUpdater, result: RunResult, streamed: str
    ) -> None:
        if result.status == "interrupted" and result.pending_approval is not None:
            await updater.requires_input(
                _agent_message(context, content_of(result), result.pending_approval)
            )
            return
        if result.status == "failed":
            await updater.failed(_agent_message(context, content_of(result)))
            return
        content = content_of(result)
        rest = rest_of(content, streamed) if streamed else content
        await updater.add_artifact(
            [new_text_part(rest)],
            artifact_id=ANSWER_ARTIFACT,
            name=ANSWER_ARTIFACT,
            append=bool(streamed),
            last_chunk=True,
        )
        if result.citations:
            await updater.add_artifact(
                [new_data_part(json.loads(json.dumps(result.citations, default=str)))],
                artifact_id=CITATIONS_ARTIFACT,
                name=CITATIONS_ARTIFACT,
                last_chunk=True,
            )
        extension = {"threadId": result.thread_id, "runId": result.run_id}
        if result.status == "rejected":
            await updater.reject(_agent_message(context, "The plan was rejected.", extension))
        else:
            await updater.complete(_agent_message(context, "Done.", extension))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = _updater(context, event_queue)
        async with self.svc.agent.db.pool.connection() as conn:
            await send_stop(
                conn, StopRequest(updater.context_id, "interrupt", f"a2a-cancel-{uuid.uuid4()}")
            )
        await updater.cancel(_agent_message(context, "Canceled: the run stops at its next step."))


def agent_card(base_url: str, *, auth_required: bool) -> AgentCard:
    """The agent's card, for a server reached at `base_url`."""
    card = AgentCard(
        name="agentgraph",
        description="A plan-and-execute agent: plans a question into steps, answers each from "
        "reasoning or the user's documents with citations, asks a person to approve "
        "plans, and checks its answer.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=base_url.rstrip("/") + PATH, protocol_binding="JSONRPC", protocol_version="1.0"
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(
                id="answer",
                name="Answer a question with a plan",
                description="Plans, runs the steps, cites the documents it used; a plan may "
                "wait for approval (input-required): answer approve, reject: reason, or an "
                "edited plan as a data part.",
                tags=["plan-and-execute", "rag", "approvals"],
                examples=["What is a B-tree? What is an LSM tree?"],
            )
        ],
    )
    if auth_required:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer", description="An agentgraph API key"
                )
            )
        )
        card.security_schemes["apiKey"].CopyFrom(
            SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(
                    location="header", name="X-API-Key", description="An agentgraph API key"
                )
            )
        )
        for name in ("bearer", "apiKey"):
            requirement = SecurityRequirement()
            requirement.schemes[name].CopyFrom(StringList())
            card.security_requirements.append(requirement)
    return card


class _Tables(DeclarativeBase):
    """Our own registry for the task table's class, apart from the SDK's default one."""


@functools.cache
def _task_model() -> type:
    return create_task_model(TASKS_TABLE, _Tables)


def task_engine(url: str) -> AsyncEngine:
    """SQLAlchemy's engine for the task store, on psycopg 3 and the app's database."""
    return create_async_engine(
        "postgresql+psycopg://",
        async_creator=lambda: psycopg.AsyncConnection.connect(url),
        pool_size=4,
    )


async def open_dispatcher(services: Services, engine: AsyncEngine) -> JsonRpcDispatcher:
    """The SDK's JSON-RPC dispatcher over our executor and the Postgres task store."""
    store = DatabaseTaskStore(engine)
    # The SDK makes a new mapped class for a table name at every store it opens, and
    # SQLAlchemy warns at each one after the first: one class per process serves them all.
    store.task_model = _task_model()
    await store.initialize()
    handler = DefaultRequestHandler(
        agent_executor=AgentGraphExecutor(services),
        task_store=store,
        agent_card=agent_card("http://127.0.0.1", auth_required=services.auth_required),
    )
    return JsonRpcDispatcher(
        request_handler=handler, context_builder=_ContextBuilder(), enable_v0_3_compat=True
    )


@router.get("/.well-known/agent-card.json")
async def get_agent_card(request: Request) -> JSONResponse:
    """The agent card, naming the endpoint at the address the client used."""
    svc: Services = request.app.state.services
    card = agent_card(str(request.base_url), auth_required=svc.auth_required)
    return JSONResponse(agent_card_to_dict(card))


@router.post(PATH, response_model=None)
@router.post(PATH + "/", response_model=None, include_in_schema=False)
async def a2a_endpoint(request: Request) -> Response:
    """The A2A JSON-RPC endpoint (see the module's docstring); the key is checked first.

    Served at `/a2a/` as well: a client that joins `/` to the card's URL (httpx's `base_url`
    does) must not meet a redirect it will not follow on a POST.
    """
    await caller(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return JSONResponse(
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": CONTENT_TYPE_NOT_SUPPORTED,
                    "message": f"Send JSON-RPC as application/json, not {media_type or 'nothing'}.",
                },
            },
            status_code=415,
        )
    dispatcher: JsonRpcDispatcher = request.app.state.a2a
    return await dispatcher.handle_requests(request)
