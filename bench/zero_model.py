"""The benchmarks' chat model: it answers at once, so what is measured is everything else.

`bench:zero` (any `bench:` spec, once `register` ran) is a `BaseChatModel` that streams a
fixed three-chunk reply with usage metadata on the last chunk. `bench:delay=0.05` waits that
many seconds before each streamed chunk: a model with a latency, for runs that last a while.
"""

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from app.errors import ConfigError
from app.models import register_chat_model
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

MODEL_SPEC = "bench:zero"
REQUEST = "What is a B-tree? What is an LSM tree?"
"""Two questions: the rule planner makes two parallel steps, and synthesis joins them."""
PLAN_STEPS = 2
REPLY_CHUNKS = ("A short", " fixed", " answer.")
INPUT_TOKENS = 40


class ZeroLatencyChatModel(BaseChatModel):
    """Answer at once with a fixed reply, streamed in a few chunks, usage on the last one;
    with `delay_s`, each streamed chunk waits that long first."""

    delay_s: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "bench-zero-latency"

    def _chunks(self) -> Iterator[ChatGenerationChunk]:
        last = len(REPLY_CHUNKS) - 1
        for i, text in enumerate(REPLY_CHUNKS):
            usage = (
                UsageMetadata(
                    input_tokens=INPUT_TOKENS,
                    output_tokens=len(REPLY_CHUNKS),
                    total_tokens=INPUT_TOKENS + len(REPLY_CHUNKS),
                )
                if i == last
                else None
            )
            yield ChatGenerationChunk(message=AIMessageChunk(content=text, usage_metadata=usage))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(
            content="".join(REPLY_CHUNKS),
            usage_metadata=UsageMetadata(
                input_tokens=INPUT_TOKENS,
                output_tokens=len(REPLY_CHUNKS),
                total_tokens=INPUT_TOKENS + len(REPLY_CHUNKS),
            ),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # The default would hop to a thread pool; a zero-latency model answers in the loop.
        return self._generate(messages, stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def zero_latency_factory(spec: str, settings: Settings) -> BaseChatModel:
    """Build the bench model for `bench:*` specs: `bench:delay=S` waits S seconds a chunk.

    Raises:
        ConfigError: a delay that is no non-negative number.
    """
    name = spec.partition(":")[2]
    if not name.startswith("delay="):
        return ZeroLatencyChatModel()
    try:
        delay_s = float(name.removeprefix("delay="))
    except ValueError:
        delay_s = -1.0
    if not 0 <= delay_s <= 60:
        raise ConfigError(f"bad bench model {spec!r}: the delay is 0 to 60 seconds")
    return ZeroLatencyChatModel(delay_s=delay_s)


def register() -> None:
    """Make `bench:*` specs resolve to the zero-latency model in this process."""
    register_chat_model("bench", zero_latency_factory)


def bench_app() -> "FastAPI":
    """The served app with the zero-latency model registered (an app factory for uvicorn)."""
    from server.app import create_app

    register()
    return create_app(get_settings())


def worker_main() -> None:
    """`agentgraph worker` with the zero-latency model registered (`python -m
    bench.zero_model worker [--concurrency N]`)."""
    from cli.main import app

    register()
    app(sys.argv[1:])


if __name__ == "__main__":
    worker_main()
