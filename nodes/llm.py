"""Model calls from nodes: streamed token deltas, token counts and cost, and model fallbacks,
in one place; each model call is a span (`app.telemetry.tracing.model_span`) carrying what it
spent.

Fallbacks are this module's own loop rather than LangChain's `with_fallbacks`: a call tries
its route's models in order (`app.model_routes.Route`) and moves on when one raises, gives no
token within `AGENTGRAPH_MODEL_TIMEOUT_S` (`ModelTimeoutError`) or is rate-limited.
`with_fallbacks` knows nothing of that timeout, cannot tell which model answered or why the
others did not (the step result and the report say both), and would hide a half-streamed
answer: here each failed model is recorded (`ModelFallback`) and announced.

A primary may fail after it streamed part of its answer. Its deltas have reached the clients
by then; they are not withdrawn, but a `fallback` event follows them (`discard: true`) that
tells a client to drop the deltas of that node and step it has so far, and the generation's
text, hence the step's output, holds only the answering model's text.
"""

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.constants import TAG_NOSTREAM
from langgraph.types import StreamWriter
from pydantic import Field, SkipValidation

from app.accounting import Tokens, UsageRecord, cost_of
from app.errors import AllModelsFailedError, ModelTimeoutError
from app.model_routes import FallbackReason, ModelFallback
from app.models import get_chat_model
from app.settings import get_settings
from app.telemetry.tracing import model_span, set_usage
from nodes.events import emit

logger = logging.getLogger(__name__)
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Generation:
    """What one model call produced and spent."""

    text: str
    model: str
    """The model that answered."""
    tokens: Tokens = field(default_factory=Tokens)
    cost: float = 0.0
    estimated: bool = False
    """True when the server reported no usage and the tokens were estimated."""
    fallbacks: tuple[ModelFallback, ...] = ()
    """The models of the route that failed before `model` answered, in order."""


def fallback_of(model: str, error: BaseException) -> ModelFallback:
    """Describe why `model` failed a call: a timeout, a rate limit (HTTP 429), or another
    error."""
    name = type(error).__name__
    reason: FallbackReason = "error"
    if isinstance(error, TimeoutError) or "Timeout" in name:
        reason = "timeout"
    elif getattr(error, "status_code", None) == 429 or "RateLimit" in name:
        reason = "rate_limited"
    text = " ".join(f"{name}: {error}".split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return ModelFallback(model=model, reason=reason, error=text)


def _all_failed(failed: list[ModelFallback]) -> AllModelsFailedError:
    listed = "; ".join(f"{f['model']}: {f['error']}" for f in failed)
    return AllModelsFailedError(f"every model of the route failed ({listed})")


def _fall_back(
    failed: list[ModelFallback],
    chain: Sequence[str],
    index: int,
    error: Exception,
    announce: tuple[StreamWriter, str, str | None] | None = None,
    *,
    discard: bool = False,
) -> None:
    """Keep the failure of `chain[index]` in `failed`, and announce it as a `fallback` event
    when `announce` gives the writer, node and step, so that the next model is asked.

    Raises:
        AllModelsFailedError: it was the last model of the chain (a chain of one model raises
            the model's own error).
    """
    if len(chain) == 1:
        raise error
    failed.append(fallback_of(chain[index], error))
    logger.warning("model %s failed (%s)", chain[index], failed[-1]["error"])
    last = index == len(chain) - 1
    if announce is not None:
        writer, node, step_id = announce
        following = None if last else chain[index + 1]
        emit(
            writer,
            "fallback",
            node=node,
            step_id=step_id,
            **failed[-1],
            next=following,
            discard=discard,
        )
    if last:
        raise _all_failed(failed) from error


def _timeout_s() -> float:
    return get_settings().model_timeout_s


async def generate_structured(
    messages: list[BaseMessage],
    schema: dict[str, Any] | type,
    *,
    model: str,
    fallbacks: Sequence[str] = (),
    config: RunnableConfig | None = None,
) -> tuple[object, Generation]:
    """Ask for JSON of `schema` (structured output); return it, not yet validated, with what
    the call spent. `model` is asked first, then each of `fallbacks` in turn while the one
    asked fails; output that does not parse is no reason to ask another.

    Raises:
        OutputParserException: the answering model's output did not parse.
        AllModelsFailedError: `model` and every fallback failed.
    """
    chain = (model, *fallbacks)
    failed: list[ModelFallback] = []
    for index, spec in enumerate(chain):
        try:
            parsed, generation, parsing_error = await _structured_once(
                messages, schema, model=spec, config=config
            )
        except Exception as exc:  # any failure of this model: the next one may answer
            _fall_back(failed, chain, index, exc)
            continue
        generation = Generation(
            text=generation.text,
            model=generation.model,
            tokens=generation.tokens,
            cost=generation.cost,
            fallbacks=tuple(failed),
        )
        if parsing_error:
            raise OutputParserException(str(parsing_error))
        return parsed, generation
    raise AssertionError("unreachable: a route has at least one model")


async def _structured_once(
    messages: list[BaseMessage],
    schema: dict[str, Any] | type,
    *,
    model: str,
    config: RunnableConfig | None,
) -> tuple[object, Generation, object]:
    metadata = ensure_config(config).get("metadata") or {}
    node = metadata.get("agentgraph_node") or metadata.get("langgraph_node")
    with model_span(model, node=node, step_id=metadata.get("step_id")) as current:
        structured = get_chat_model(model).with_structured_output(schema, include_raw=True)
        try:
            async with asyncio.timeout(_timeout_s()):
                raw = await structured.ainvoke(messages, config)
        except TimeoutError:
            raise ModelTimeoutError(f"no answer from {model!r} within {_timeout_s():g} s") from None
        parsed: object = raw
        message = None
        if isinstance(raw, dict) and "parsed" in raw:
            parsed, message = raw["parsed"], raw.get("raw")
        usage = getattr(message, "usage_metadata", None) or {}
        tokens = Tokens(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        generation = Generation(text="", model=model, tokens=tokens, cost=cost_of(model, tokens))
        set_usage(current, generation.tokens, generation.cost)
    parsing_error = raw.get("parsing_error") if isinstance(raw, dict) else None
    return parsed, generation, parsing_error


async def generate(
    messages: list[BaseMessage],
    *,
    model: str,
    writer: StreamWriter,
    node: str,
    step_id: str | None = None,
    max_tokens: int | None = None,
    fallbacks: Sequence[str] = (),
) -> Generation:
    """Stream a chat completion, emitting each token delta, and count what it spent.

    `model` is asked first, then each of `fallbacks` in turn while the one asked fails;
    each failure is announced by a `fallback` event and kept in the generation.

    Raises:
        AllModelsFailedError: `model` and every fallback failed (with no fallbacks, the
            model's own error is raised as it is).
    """
    chain = (model, *fallbacks)
    failed: list[ModelFallback] = []
    for index, spec in enumerate(chain):
        parts: list[str] = []
        try:
            generation = await _stream_once(
                messages,
                model=spec,
                writer=writer,
                node=node,
                step_id=step_id,
                max_tokens=max_tokens,
                parts=parts,
            )
        except Exception as exc:  # any failure of this model: the next one may answer
            _fall_back(failed, chain, index, exc, (writer, node, step_id), discard=bool(parts))
            continue
        return Generation(
            text=generation.text,
            model=generation.model,
            tokens=generation.tokens,
            cost=generation.cost,
            estimated=generation.estimated,
            fallbacks=tuple(failed),
        )
    raise AssertionError("unreachable: a route has at least one model")


async def invoke(
    messages: list[BaseMessage],
    *,
    chain: Sequence[str],
    bind: Callable[[BaseChatModel], Runnable[Any, BaseMessage]],
    writer: StreamWriter,
    node: str,
    step_id: str | None = None,
    max_tokens: int | None = None,
) -> tuple[BaseMessage, Generation]:
    """Ask for one whole answer (not streamed: a tool-calling turn), from the models of
    `chain` in order, each as `bind` makes it (tools bound); return the answer and what it
    spent. A model that raises, or gives no answer within `AGENTGRAPH_MODEL_TIMEOUT_S`, is
    announced by a `fallback` event and kept in the generation, and the next one is asked.

    Raises:
        AllModelsFailedError: every model of `chain` failed (with one model, its own error
            is raised as it is).
    """
    failed: list[ModelFallback] = []
    timeout = _timeout_s()
    kwargs: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    for index, spec in enumerate(chain):
        try:
            with model_span(spec, node=node, step_id=step_id) as current:
                caller = bind(get_chat_model(spec))
                try:
                    async with asyncio.timeout(timeout):
                        reply = await caller.ainvoke(
                            messages, model_config(node, step_id), **kwargs
                        )
                except TimeoutError:
                    raise ModelTimeoutError(
                        f"no answer from {spec!r} within {timeout:g} s"
                    ) from None
                tokens = tokens_of(reply)
                set_usage(current, tokens, cost_of(spec, tokens))
        except Exception as exc:  # any failure of this model: the next one may answer
            _fall_back(failed, chain, index, exc, (writer, node, step_id))
            continue
        generation = Generation(
            text=reply.text.strip(),
            model=spec,
            tokens=tokens,
            cost=cost_of(spec, tokens),
            fallbacks=tuple(failed),
        )
        return reply, generation
    raise AssertionError("unreachable: a route has at least one model")


class RoutedChatModel(BaseChatModel):
    """A route's models as one chat model, for code that takes a chat model and calls it
    itself (the supervisor of `langgraph-supervisor`): each call is `invoke`'s, asking the
    models of `chain` in order with the tools bound to it (`bind_tools`), announcing each
    fallback and keeping it in `fallbacks` with the model that answered. The answer names
    that model in its `response_metadata` (`model`), for its cost."""

    chain: list[str]
    writer: Any
    """The run's `StreamWriter`, for the `fallback` events."""
    node: str
    step_id: str | None = None
    max_tokens: int | None = None
    fallbacks: SkipValidation[list[ModelFallback]] = Field(default_factory=list)
    """Where the fallbacks are kept: the list given, itself."""
    tags: list[str] | None = Field(default_factory=lambda: [TAG_NOSTREAM])
    """The route's own run is not streamed as a message (LangGraph's `messages` mode): the
    model that answers streams its tokens itself, and the route would repeat its answer."""

    @property
    def _llm_type(self) -> str:
        return "agentgraph-route"

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind `tools` for each model asked, in OpenAI's format, which LangGraph's prebuilt
        agents read back; `parallel_tool_calls` goes to the models whose `bind_tools` take it."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("a route is asked asynchronously")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = kwargs.pop("tools", None)

        def bind(chat: BaseChatModel) -> Runnable[Any, BaseMessage]:
            if not tools:
                return chat
            options = dict(kwargs)
            if "parallel_tool_calls" not in inspect.signature(chat.bind_tools).parameters:
                options.pop("parallel_tool_calls", None)
            return chat.bind_tools(tools, **options)

        reply, generation = await invoke(
            messages,
            chain=self.chain,
            bind=bind,
            writer=self.writer,
            node=self.node,
            step_id=self.step_id,
            max_tokens=self.max_tokens,
        )
        self.fallbacks.extend({**f, "answered_by": generation.model} for f in generation.fallbacks)
        answer = AIMessage(
            content=reply.content,
            tool_calls=getattr(reply, "tool_calls", []),
            usage_metadata=getattr(reply, "usage_metadata", None),
            response_metadata={**reply.response_metadata, "model": generation.model},
            id=reply.id,
        )
        return ChatResult(generations=[ChatGeneration(message=answer)])


def tokens_of(message: BaseMessage) -> Tokens:
    """The tokens a model's answer reports it spent (none when it reports nothing)."""
    usage = getattr(message, "usage_metadata", None) or {}
    return Tokens(usage.get("input_tokens", 0), usage.get("output_tokens", 0))


async def _stream_once(
    messages: list[BaseMessage],
    *,
    model: str,
    writer: StreamWriter,
    node: str,
    step_id: str | None,
    max_tokens: int | None,
    parts: list[str],
) -> Generation:
    """Stream one model's answer into `parts` (so that a caller sees what it streamed
    before it failed), each token a delta."""
    timeout = _timeout_s()
    with model_span(model, node=node, step_id=step_id) as current:
        chat = get_chat_model(model)
        tokens = Tokens()
        kwargs: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
        stream = chat.astream(messages, model_config(node, step_id), **kwargs)
        async with aclosing(stream):  # type: ignore[type-var]
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    what = "next token" if parts else "answer"
                    raise ModelTimeoutError(
                        f"no {what} from {model!r} within {timeout:g} s"
                    ) from None
                text = chunk.text
                if text:
                    parts.append(text)
                    emit(writer, "delta", node=node, step_id=step_id, text=text)
                usage = getattr(chunk, "usage_metadata", None)
                if usage:
                    tokens = tokens + Tokens(
                        usage.get("input_tokens", 0), usage.get("output_tokens", 0)
                    )
        estimated = tokens.total == 0 and bool(parts)
        if estimated:
            # Some OpenAI-compatible servers stream no usage at all. Never report a call as
            # free: estimate (a streamed chunk is about one token; about four characters per
            # token).
            logger.warning("model %s reported no token usage; estimating it", model)
            prompt_chars = sum(len(m.text) for m in messages)
            tokens = Tokens(input=max(1, prompt_chars // 4), output=len(parts))
        generation = Generation(
            text="".join(parts).strip(),
            model=model,
            tokens=tokens,
            cost=cost_of(model, tokens),
            estimated=estimated,
        )
        set_usage(current, generation.tokens, generation.cost)
    return generation


def model_config(node: str, step_id: str | None) -> RunnableConfig:
    """The config of a model call (or a retrieval): the node's own (its callbacks, so
    LangChain's events and LangGraph's `messages` stream see the call), tagged with the node
    and step."""
    tags = [f"agentgraph:node:{node}"] + ([f"agentgraph:step:{step_id}"] if step_id else [])
    return merge_configs(
        ensure_config(), {"tags": tags, "metadata": {"agentgraph_node": node, "step_id": step_id}}
    )


def usage_record(
    node: str,
    started: float,
    *,
    generation: Generation | None = None,
    step_id: str | None = None,
    attempts: int = 1,
) -> UsageRecord:
    """Record a node execution that began at `started` (a `time.time()` value) and ends now;
    `generation.model` is the model that answered, and its fallbacks are kept."""
    ended = time.time()
    tokens = generation.tokens if generation else Tokens()
    record = UsageRecord(
        node=node,
        step_id=step_id,
        model=generation.model if generation else None,
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cost=generation.cost if generation else 0.0,
        latency_ms=(ended - started) * 1000,
        started_at=started,
        ended_at=ended,
        attempts=attempts,
        estimated=generation.estimated if generation else False,
    )
    if generation is not None and generation.fallbacks:
        record["fallbacks"] = list(generation.fallbacks)
    return record
