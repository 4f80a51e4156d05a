"""Fakes of what lies outside the machine (hosted chat models), shared by the test suites.

Never a stand-in for the database or the checkpointer: those are always real.
"""

import asyncio
import faulthandler
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from app.models import register_chat_model
from app.settings import Settings


class ScriptedChatModel(BaseChatModel):
    """A chat model that streams a fixed reply word by word and reports token usage.

    `reply` may contain `{n}`, replaced by the 1-based call number. The first `fail_first`
    calls raise (a negative value: every call raises). `delay_s` is slept asynchronously at
    the start of every call. With `gate_file`, streamed calls from number `gate_from_call` on
    wait until that file exists: a test (or another process) decides when they go on.
    `structured` is what `with_structured_output` returns as parsed; those calls are counted
    apart, in `structured_calls`, and never fail. Streamed call number `crash_on_call` makes
    the process die of a segmentation fault, as a crash in native model code (llama.cpp) does.
    `block_s` is slept synchronously at the start of every streamed call: the event loop is
    stuck meanwhile, as under a blocking call in async code.
    """

    reply: str = "A fake answer from the scripted model."
    delay_s: float = 0.0
    gate_file: str | None = None
    gate_from_call: int = 1
    fail_first: int = 0
    crash_on_call: int = 0
    block_s: float = 0.0
    structured: Any = None
    tool_script: list[dict[str, Any]] = Field(default_factory=list)
    """With tools bound, the tool calls (`{"name", "args"}`) the model makes, one per turn;
    once they are spent it answers with `reply`."""
    tool_turns: int = 0
    tool_fail_first: int = 0
    """The first so many turns with tools bound raise (a negative value: every one does)."""
    input_tokens: int = 11
    calls: int = 0
    structured_calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": self.input_tokens + output_tokens,
        }

    def _next_call(self) -> int:
        self.calls += 1
        return self.calls

    def _check_failure(self, call: int) -> None:
        if self.fail_first < 0 or call <= self.fail_first:
            raise RuntimeError(f"scripted failure on call {call}")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._next_call()
        self._check_failure(call)
        text = self.reply.replace("{n}", str(call))
        message = AIMessage(content=text, usage_metadata=self._usage(len(text.split())))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._next_call()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.gate_file and call >= self.gate_from_call:
            await _wait_for_file(self.gate_file)
        if self.block_s:
            time.sleep(self.block_s)  # noqa: ASYNC251 - blocks the event loop, on purpose
        if call == self.crash_on_call:
            faulthandler._sigsegv()  # a real SIGSEGV, from a bad read in C
        self._check_failure(call)
        tokens = re.findall(r"\S+\s*", self.reply.replace("{n}", str(call)))
        for index, token in enumerate(tokens):
            last = index == len(tokens) - 1
            chunk = AIMessageChunk(
                content=token, usage_metadata=self._usage(len(tokens)) if last else None
            )
            yield ChatGenerationChunk(message=chunk)

    def bind_tools(
        self, tools: Any, *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[Any, Any]:
        async def turn(_: Any, **_options: Any) -> AIMessage:
            self.tool_turns += 1
            if self.tool_fail_first < 0 or self.tool_turns <= self.tool_fail_first:
                raise RuntimeError(f"scripted failure on tool turn {self.tool_turns}")
            usage = self._usage(3)
            if self.tool_turns <= len(self.tool_script):
                call = self.tool_script[self.tool_turns - 1]
                tool_call = {"id": f"call_{self.tool_turns}", "type": "tool_call", **call}
                return AIMessage(content="", tool_calls=[tool_call], usage_metadata=usage)
            return AIMessage(content=self.reply, usage_metadata=usage)

        # Bound as a chat model binds them: LangGraph's prebuilt agents read the bound tools.
        return RunnableLambda(turn).bind(tools=[convert_to_openai_tool(t) for t in tools])

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        async def answer(_: Any) -> Any:
            self.structured_calls += 1
            raw = AIMessage(content="", usage_metadata=self._usage(5))
            if include_raw:
                return {"raw": raw, "parsed": self.structured, "parsing_error": None}
            return self.structured

        return RunnableLambda(answer)


async def _wait_for_file(path: str) -> None:
    # Polled, not an asyncio.Event: the gate may be opened from another process.
    while not await asyncio.to_thread(Path(path).exists):  # noqa: ASYNC110
        await asyncio.sleep(0.02)


_MODELS: dict[str, ScriptedChatModel] = {}


def _factory(spec: str, settings: Settings) -> BaseChatModel:
    return _MODELS[spec]


def scripted_spec(**options: Any) -> str:
    """Return a model spec, `scripted:{json options}`, that any process with `register_fakes`
    turns into the same `ScriptedChatModel` (one instance per process, as models are cached)."""
    return "scripted:" + json.dumps({"id": uuid.uuid4().hex, **options}, sort_keys=True)


def _from_spec(spec: str, settings: Settings) -> BaseChatModel:
    options = json.loads(spec.split(":", 1)[1])
    options.pop("id")
    return ScriptedChatModel(**options)


def register_fakes() -> None:
    """Make `fake:…` (models made by `make_model`) and `scripted:…` specs resolve here."""
    register_chat_model("fake", _factory)
    register_chat_model("scripted", _from_spec)


MakeModel = Callable[..., tuple[str, ScriptedChatModel]]


@pytest.fixture
def make_model() -> Iterator[MakeModel]:
    """Return a maker of scripted models; each gets its own spec such as `fake:1a2b...`."""
    register_fakes()
    made: list[str] = []

    def make(**options: Any) -> tuple[str, ScriptedChatModel]:
        model = ScriptedChatModel(**options)
        spec = f"fake:{uuid.uuid4().hex}"
        _MODELS[spec] = model
        made.append(spec)
        return spec, model

    yield make
    for spec in made:
        _MODELS.pop(spec, None)
