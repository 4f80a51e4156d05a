"""The tool worker: a `tool` step, answered by the chat model calling tools.

The step runs as its agent (the manifest's: its model and prompt), and the model is given the
tools the step lists (LangChain's `bind_tools`: native tool calling on hosted models, a JSON
grammar on the local one). Its first turn must call a tool; each call is checked by the
policy at call time (granted to the agent, approved by a person if its effect needs it,
arguments that fit the schema), run within the tool's timeout and limits, audited, and its
result handed back, until the model answers, repeats a call, or the step's `max_tool_calls`
are spent. A step whose model does not answer in words answers with the tools' results.

The step's models are its agent's route for the `reasoning` role (`Toolbox.route_of`): a turn
whose model fails (an error, a rate limit, no answer within `AGENTGRAPH_MODEL_TIMEOUT_S`) is
asked of the next, announced by a `fallback` event, and the model that answered goes on with
the rest of the step (`nodes.llm.invoke`).
"""

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.runnables import Runnable
from langgraph.config import get_config
from langgraph.runtime import Runtime
from opentelemetry.trace import StatusCode

from app.accounting import Tokens
from app.artifacts import ArtifactStore
from app.errors import AgentGraphError, ToolArgumentError, ToolRefusedError
from app.model_routes import ModelFallback
from app.telemetry.tracing import NODE, STATUS, STEP_ID, TOOL, span
from app.tools.audit import AuditLog, CallStatus
from app.tools.audit import ToolCall as AuditedCall
from app.tools.policy import run_tool
from app.tools.registry import ToolSpec
from nodes.artifacts import keep_tool_outputs
from nodes.context import Context
from nodes.events import emit
from nodes.llm import Generation, invoke, usage_record
from nodes.prompts import (
    DEPENDENCY_BLOCK,
    TOOL_EXAMPLE_ANSWER,
    TOOL_EXAMPLE_EXPRESSION,
    TOOL_EXAMPLE_RESULT,
    TOOL_EXAMPLE_TASK,
    TOOL_SYSTEM_PROMPT,
)
from nodes.reasoning import WorkerUpdate
from nodes.schemas import StepResult, StepUsage
from nodes.state import Node, WorkerInput
from nodes.toolbox import Toolbox, toolbox_or_settings


@dataclass(frozen=True)
class Outcome:
    """What one call came to, as the model and the audit log see it."""

    text: str
    status: CallStatus
    error: str | None = None


def tool_worker(
    toolbox: Toolbox | None = None,
    *,
    audit: AuditLog | None = None,
    artifacts: ArtifactStore | None = None,
) -> Node[WorkerInput, WorkerUpdate]:
    """Return the tool worker over `toolbox` (the settings' manifest's by default); every
    call is written to `audit` when one is given, and the calls' structured or large outputs
    are kept in `artifacts` (`nodes.artifacts`)."""

    async def call_tool(
        box: Toolbox, payload: WorkerInput, call: ToolCall, thread_id: str
    ) -> Outcome:
        started = time.perf_counter()
        spec = box.tools.get(call["name"])
        agent = payload["step"].get("agent", box.default_agent)
        approval = payload.get("approval")
        with span(
            f"execute_tool {call['name']}",
            {TOOL: call["name"], NODE: "tool", STEP_ID: payload["step"]["id"]},
        ) as current:
            try:
                checked = box.policy.check(
                    spec, call["name"], agent=agent, approved=approval is not None
                )
                listed = payload["step"].get("tools")
                if listed is not None and checked.name not in listed:  # what the gate showed
                    raise ToolRefusedError(
                        f"{checked.name!r} is not among the tools the plan gives step "
                        f"{payload['step']['id']} ({', '.join(listed) or 'none'})"
                    )
                outcome = Outcome(await run_tool(checked, call["args"]), "ok")
            except ToolRefusedError as exc:
                outcome = Outcome(f"refused: {exc}", "refused", str(exc))
            except ToolArgumentError as exc:
                outcome = Outcome(f"invalid arguments: {exc}", "invalid", str(exc))
            except AgentGraphError as exc:
                outcome = Outcome(f"failed: {exc}", "failed", str(exc))
            current.set_attribute(STATUS, outcome.status)
            if outcome.error is not None:
                current.set_status(StatusCode.ERROR, outcome.error)
        if audit is not None:
            needed = spec is not None and box.policy.needs_approval(spec)
            await audit.record(
                AuditedCall(
                    thread_id=thread_id,
                    step_id=payload["step"]["id"],
                    agent=agent,
                    tool=call["name"],
                    arguments=call["args"],
                    status=outcome.status,
                    result_chars=len(outcome.text) if outcome.status == "ok" else 0,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    approval=(approval if needed else "not needed") if spec else None,
                    error=outcome.error,
                )
            )
        return outcome

    async def run_tools(state: WorkerInput, runtime: Runtime[Context]) -> WorkerUpdate:
        """Run one tool step and return its result."""
        payload = state
        started = time.time()
        step = payload["step"]
        context = runtime.context
        box = await toolbox_or_settings(toolbox)
        agent = step.get("agent", box.default_agent)
        names = step.get("tools") or [t.name for t in box.granted(agent)]
        bound = [box.tools[n] for n in names if n in box.tools]
        thread_id = _thread_id()
        schemas = [_openai_tool(spec) for spec in bound]
        route = box.route_of(agent, context)
        chain = [route.primary, *route.fallbacks]
        system = box.prompt_of(agent, TOOL_SYSTEM_PROMPT)
        example = _worked_example() if any(s.name == "calculator" for s in bound) else []
        messages: list[BaseMessage] = [
            SystemMessage(system),
            *example,
            HumanMessage(_task(payload)),
        ]
        tokens, cost = Tokens(), 0.0
        failed: list[ModelFallback] = []
        results: list[tuple[ToolCall, Outcome]] = []
        answer = ""
        for turn in range(context.max_tool_calls + 1):
            spent = turn == context.max_tool_calls or not schemas
            reply, generation = await invoke(
                messages,
                chain=chain,
                bind=partial(_bound, schemas=schemas, turn=turn, spent=spent),
                writer=runtime.stream_writer,
                node="tool",
                step_id=step["id"],
                max_tokens=context.max_output_tokens,
            )
            # The model that answered goes on with the step; those before it failed.
            chain = chain[chain.index(generation.model) :]
            failed += generation.fallbacks
            tokens, cost = tokens + generation.tokens, cost + generation.cost
            calls = reply.tool_calls if isinstance(reply, AIMessage) else []
            fresh = [c for c in calls if not _repeats(c, results)]
            if spent or not fresh:
                answer = "" if calls else reply.text.strip()
                break
            messages.append(reply)
            for call in calls:
                outcome = await call_tool(box, payload, call, thread_id)
                results.append((call, outcome))
                messages.append(
                    ToolMessage(outcome.text, tool_call_id=call["id"] or "", name=call["name"])
                )
        output = answer or _from_results(results)
        if output:
            emit(runtime.stream_writer, "delta", node="tool", step_id=step["id"], text=output)
        generation = Generation(
            text=output, model=chain[0], tokens=tokens, cost=cost, fallbacks=tuple(failed)
        )
        record = usage_record("tool", started, generation=generation, step_id=step["id"])
        # Done when a call succeeded, or when a model that called nothing answered in words.
        done = any(o.status == "ok" for _, o in results) or (not results and bool(answer))
        result = StepResult(
            step_id=step["id"],
            kind=step["kind"],
            status="done" if done else "failed",
            output=output,
            citations=[],
            usage=StepUsage(
                input_tokens=tokens.input, output_tokens=tokens.output, cost=generation.cost
            ),
            attempts=1,
            latency_ms=record["latency_ms"],
            error=None if done else "no tool call succeeded and the model gave no answer",
            tool_calls=[
                {"tool": c["name"], "arguments": c["args"], "status": o.status, "result": o.text}
                for c, o in results
            ],
        )
        if artifacts is not None:
            kept = await keep_tool_outputs(
                artifacts, step["id"], [(c["name"], o.text) for c, o in results if o.status == "ok"]
            )
            if kept:
                result["artifacts"] = kept
        emit(runtime.stream_writer, "step_result", result=result)
        return WorkerUpdate(results={step["id"]: result}, usage=[record])

    return run_tools


def _worked_example() -> list[BaseMessage]:
    call = ToolCall(
        name="calculator", args={"expression": TOOL_EXAMPLE_EXPRESSION}, id="call_example"
    )
    return [
        HumanMessage(TOOL_EXAMPLE_TASK),
        AIMessage(content="", tool_calls=[call]),
        ToolMessage(TOOL_EXAMPLE_RESULT, tool_call_id="call_example", name="calculator"),
        AIMessage(TOOL_EXAMPLE_ANSWER),
    ]


def _task(payload: WorkerInput) -> str:
    deps = payload["dependencies"]
    if not deps:
        return payload["step"]["instruction"]
    results = "\n".join(f"- [{d['step_id']}] {d['output']}" for d in deps)
    return payload["step"]["instruction"] + "\n" + DEPENDENCY_BLOCK.format(results=results)


def _openai_tool(spec: ToolSpec) -> dict[str, object]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.json_schema(),
        },
    }


def _bound(
    chat: BaseChatModel, *, schemas: list[dict[str, object]], turn: int, spent: bool
) -> Runnable[Any, BaseMessage]:
    """The model as a turn asks it: with the step's tools bound (the first turn must call
    one), or bare once the step's calls are spent."""
    if spent:
        return chat
    return chat.bind_tools(schemas, tool_choice="any" if turn == 0 else None)


def _repeats(call: ToolCall, results: list[tuple[ToolCall, Outcome]]) -> bool:
    # A small model asks for the same call again rather than answering: take that as done.
    return any(c["name"] == call["name"] and c["args"] == call["args"] for c, _ in results)


def _from_results(results: list[tuple[ToolCall, Outcome]]) -> str:
    return "\n".join(
        f"{c['name']}({', '.join(f'{k}={v!r}' for k, v in c['args'].items())}) = {o.text}"
        for c, o in results
    )


def _thread_id() -> str:
    return str(get_config().get("configurable", {}).get("thread_id") or "")
