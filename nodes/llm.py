"""Model calls from nodes: streamed token deltas, token counts and cost, in one place."""

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs
from langgraph.types import StreamWriter

from app.accounting import Tokens, UsageRecord, cost_of
from app.models import get_chat_model
from nodes.events import emit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """What one streamed model call produced and spent."""

    text: str
    model: str
    tokens: Tokens = field(default_factory=Tokens)
    cost: float = 0.0
    estimated: bool = False
    """True when the server reported no usage and the tokens were estimated."""


async def generate_structured(
    messages: list[BaseMessage],
    schema: dict[str, Any] | type,
    *,
    model: str,
    config: RunnableConfig | None = None,
) -> tuple[object, Generation]:
    """Ask for JSON of `schema` (structured output); return it, not yet validated, with what
    the call spent.

    Raises:
        OutputParserException: the model's output did not parse.
    """
    structured = get_chat_model(model).with_structured_output(schema, include_raw=True)
    raw = await structured.ainvoke(messages, config)
    parsed: object = raw
    message = None
    if isinstance(raw, dict) and "parsed" in raw:
        parsed, message = raw["parsed"], raw.get("raw")
        if raw.get("parsing_error"):
            raise OutputParserException(str(raw["parsing_error"]))
    usage = getattr(message, "usage_metadata", None) or {}
    tokens = Tokens(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    return parsed, Generation(text="", model=model, tokens=tokens, cost=cost_of(model, tokens))


async def generate(
    messages: list[BaseMessage],
    *,
    model: str,
    writer: StreamWriter,
    node: str,
    step_id: str | None = None,
    max_tokens: int | None = None,
) -> Generation:
    """Stream a chat completion, emitting each token delta, and count what it spent."""
    chat = get_chat_model(model)
    parts: list[str] = []
    tokens = Tokens()
    kwargs: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    async for chunk in chat.astream(messages, model_config(node, step_id), **kwargs):
        text = chunk.text
        if text:
            parts.append(text)
            emit(writer, "delta", node=node, step_id=step_id, text=text)
        usage = getattr(chunk, "usage_metadata", None)
        if usage:
            tokens = tokens + Tokens(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    estimated = tokens.total == 0 and bool(parts)
    if estimated:
        # Some OpenAI-compatible servers stream no usage at all. Never report a call as free:
        # estimate (a streamed chunk is about one token; about four characters per token).
        logger.warning("model %s reported no token usage; estimating it", model)
        prompt_chars = sum(len(m.text) for m in messages)
        tokens = Tokens(input=max(1, prompt_chars // 4), output=len(parts))
    return Generation(
        text="".join(parts).strip(),
        model=model,
        tokens=tokens,
        cost=cost_of(model, tokens),
        estimated=estimated,
    )


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
    """Record a node execution that began at `started` (a `time.time()` value) and ends now."""
    ended = time.time()
    tokens = generation.tokens if generation else Tokens()
    return UsageRecord(
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
