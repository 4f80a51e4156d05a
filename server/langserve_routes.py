"""LangServe routes at /agent, for `langserve.RemoteRunnable` clients.

LangServe drops `configurable` keys that the served runnable does not declare, so the runnable
declares `thread_id` and every per-run option as configurable fields; `per_req_config_modifier`
then gives a request without a thread id a fresh one. LangServe cannot send
`Command(resume=...)`, so the input model takes either a question or `{"resume": {...}}`.
Runs go through the same run manager as the native API: the same thread locks and inbox.
"""

from collections.abc import AsyncIterator, Iterator
from dataclasses import fields
from typing import Any

from fastapi import FastAPI, Request
from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec
from langserve import add_routes
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.errors import AgentGraphError
from app.settings import Settings
from graphs.runs import RunEvent, new_thread_id
from nodes.context import Context
from server.deps import Services
from server.schemas import MAX_QUESTION_CHARS, Decision

OPTION_NAMES = tuple(f.name for f in fields(Context))


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

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings

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
            thread_id = str(configurable.get("thread_id") or new_thread_id())
            overrides = {
                k: configurable[k] for k in OPTION_NAMES if configurable.get(k) is not None
            }
            svc: Services = self.app.state.services
            if item.question is not None:
                context = Context.from_settings(self.settings, **overrides)
                handle = await svc.runs.start(
                    thread_id=thread_id, context=context, request=item.question
                )
            else:
                assert item.resume is not None
                context = await svc.runs.context_for(thread_id, overrides)
                handle = await svc.runs.start(
                    thread_id=thread_id, context=context, decision=item.resume.model_dump()
                )
            yield {"event": "metadata", "thread_id": thread_id, "run_id": handle.run_id}
            while (event := await handle.queue.get()) is not None:
                if event["event"] in ("final", "error"):
                    event = {**event, "thread_id": thread_id}
                yield event


def _config_modifier(config: dict[str, Any], request: Request) -> dict[str, Any]:
    """Give every LangServe request a thread id, so the graph's checkpointer can store it."""
    configurable = dict(config.get("configurable") or {})
    if not configurable.get("thread_id"):
        configurable["thread_id"] = new_thread_id()
    return {**config, "configurable": configurable}


def add_agent_routes(app: FastAPI, settings: Settings) -> None:
    """Add invoke, batch, stream, stream_events, the schemas and the playground at /agent."""
    add_routes(
        app,
        AgentRunnable(app, settings),
        path="/agent",
        input_type=AgentInput,
        output_type=dict,
        per_req_config_modifier=_config_modifier,
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
