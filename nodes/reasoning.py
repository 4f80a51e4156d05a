"""The reasoning worker: one step, answered by the chat model with its dependencies' results.

Retries and the per-attempt timeout are node policies set where the graph is assembled; when
the last attempt fails, `step_failed` turns the error into a failed `StepResult`.
"""

import time
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.errors import NodeError, NodeTimeoutError
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import TypedDict

from app.accounting import UsageRecord
from nodes.context import Context
from nodes.events import emit
from nodes.llm import Generation, generate, usage_record
from nodes.prompts import DEPENDENCY_BLOCK, STEP_PROMPT, SYSTEM_PROMPT
from nodes.schemas import Step, StepResult, StepUsage
from nodes.state import Node, WorkerInput
from nodes.toolbox import Toolbox, toolbox_or_settings


class WorkerUpdate(TypedDict):
    results: dict[str, StepResult]
    usage: list[UsageRecord]


def step_messages(payload: WorkerInput) -> list[BaseMessage]:
    """Build the prompt of a step from its instruction and its dependencies' outputs."""
    deps = payload["dependencies"]
    dependencies = (
        DEPENDENCY_BLOCK.format(
            results="\n".join(f"- [{d['step_id']}] {d['output']}" for d in deps)
        )
        if deps
        else ""
    )
    return [
        SystemMessage(SYSTEM_PROMPT),
        HumanMessage(
            STEP_PROMPT.format(
                instruction=payload["step"]["instruction"],
                dependencies=dependencies,
            )
        ),
    ]


def _attempt(runtime: Runtime[Context]) -> int:
    return runtime.execution_info.node_attempt if runtime.execution_info else 1


def reasoning_worker(toolbox: Toolbox | None = None) -> Node[WorkerInput, WorkerUpdate]:
    """Return the reasoning worker: a step runs as its agent of `toolbox` (the settings'
    manifest's by default), with the agent's model and prompt where the manifest gives them."""

    async def reason(state: WorkerInput, runtime: Runtime[Context]) -> WorkerUpdate:
        """Run one reasoning step and return its result."""
        return await _reason(state, runtime, await toolbox_or_settings(toolbox))

    return reason


async def _reason(payload: WorkerInput, runtime: Runtime[Context], box: Toolbox) -> WorkerUpdate:
    started = time.time()
    step = payload["step"]
    context = runtime.context
    agent = step.get("agent", box.default_agent)
    messages = step_messages(payload)
    messages[0] = SystemMessage(box.prompt_of(agent, SYSTEM_PROMPT))
    route = box.route_of(agent, context, "reasoning")
    generation = await generate(
        messages,
        model=route.primary,
        fallbacks=route.fallbacks,
        writer=runtime.stream_writer,
        node="reasoning",
        step_id=step["id"],
        max_tokens=context.max_output_tokens,
    )
    record = usage_record(
        "reasoning", started, generation=generation, step_id=step["id"], attempts=_attempt(runtime)
    )
    result = StepResult(
        step_id=step["id"],
        kind=step["kind"],
        status="done" if generation.text else "failed",
        output=generation.text,
        citations=[],
        usage=StepUsage(
            input_tokens=generation.tokens.input,
            output_tokens=generation.tokens.output,
            cost=generation.cost,
        ),
        attempts=record["attempts"],
        latency_ms=record["latency_ms"],
        error=None if generation.text else "the model returned an empty answer",
        model=generation.model,
        fallbacks=list(generation.fallbacks),
    )
    emit(runtime.stream_writer, "step_result", result=result)
    return WorkerUpdate(results={step["id"]: result}, usage=[record])


def answered_step(
    runtime: Runtime[Context],
    step: Step,
    *,
    node: str,
    started: float,
    generation: Generation,
    error: str,
    **extra: Any,
) -> WorkerUpdate:
    """Finish a step whose answer came whole (a committee's, a supervisor's): emit it as the
    step's delta, then its result (failed with `error` when there is no answer), and return
    the update. `extra` are the result's pattern fields."""
    output = generation.text
    if output:
        emit(runtime.stream_writer, "delta", node=node, step_id=step["id"], text=output)
    record = usage_record(node, started, generation=generation, step_id=step["id"])
    tokens = generation.tokens
    result = StepResult(
        step_id=step["id"],
        kind=step["kind"],
        status="done" if output else "failed",
        output=output,
        citations=[],
        usage=StepUsage(
            input_tokens=tokens.input, output_tokens=tokens.output, cost=generation.cost
        ),
        attempts=1,
        latency_ms=record["latency_ms"],
        error=None if output else error,
        **extra,  # type: ignore[typeddict-item]
    )
    emit(runtime.stream_writer, "step_result", result=result)
    return WorkerUpdate(results={step["id"]: result}, usage=[record])


def describe(error: BaseException) -> str:
    """Say in one line why a step failed."""
    if isinstance(error, NodeTimeoutError):
        return f"timed out after {error.timeout:g} s"
    return f"{type(error).__name__}: {error}"


def step_failed_handler(attempts: int, node: str = "reasoning"):  # type: ignore[no-untyped-def]
    """Make the error handler of a worker whose retry policy allows `attempts` attempts."""

    async def step_failed(
        payload: WorkerInput, error: NodeError, runtime: Runtime[Context]
    ) -> Command[Literal["dispatch"]]:
        started = time.time()
        first = runtime.execution_info.node_first_attempt_time if runtime.execution_info else None
        step = payload["step"]
        result = StepResult(
            step_id=step["id"],
            kind=step["kind"],
            status="failed",
            output="",
            citations=[],
            usage=StepUsage(input_tokens=0, output_tokens=0, cost=0.0),
            attempts=attempts,
            latency_ms=(started - first) * 1000 if first else 0.0,
            error=f"failed after {attempts} attempt(s): {describe(error.error)}",
        )
        emit(runtime.stream_writer, "step_result", result=result)
        record = usage_record(node, first or started, step_id=step["id"], attempts=attempts)
        return Command(goto="dispatch", update={"results": {step["id"]: result}, "usage": [record]})

    return step_failed
