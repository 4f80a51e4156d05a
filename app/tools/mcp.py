"""Tools from MCP servers, as ToolSpecs: tool `t` of server `s` becomes `s_t`, its JSON input
schema a pydantic model (the policy validates its calls as any tool's), its effect and limits
from the server's manifest entry. `open_mcp_tools` keeps a session per server open for an
`async with` block: a stdio server is one process whose state lasts between calls, and a call
takes about 3 ms. `load_mcp_tools` keeps none: langchain-mcp-adapters opens a session per call,
for stdio a new process (about 0.6 s a call), and state lasts only if the server keeps it on
disk. So a long-lived process holds `open_mcp_tools` in its lifespan. A result's text is joined;
other content (an image, a file) is named, not shown.
"""

import asyncio
import keyword
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Annotated, Literal, Union

import httpx
from anyio import BrokenResourceError, ClosedResourceError
from langchain_core.tools import BaseTool, ToolException
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.sessions import Connection
from langchain_mcp_adapters.tools import load_mcp_tools as session_tools
from mcp import McpError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema, create_model

from app.errors import ConfigError, ToolFailedError
from app.tools.manifest import McpServer
from app.tools.registry import ToolSpec

Schema = Mapping[str, JsonValue]
_Servers = Mapping[str, McpServer]
_Tools = dict[str, ToolSpec]
AnyJson = Annotated[JsonValue, WithJsonSchema({})]  # for what cannot be expressed precisely

# What starting, listing or calling a server raises when it is not there.
_UNREACHABLE = (
    OSError,
    McpError,
    httpx.HTTPError,
    ExceptionGroup,
    BrokenResourceError,
    ClosedResourceError,
)
_LITERAL = (str, int, bool, type(None))
_SCALARS = {"string": str, "integer": int, "number": float, "boolean": bool, "null": None}
_LIMITS = {  # JSON schema's keyword: pydantic's
    **{"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt"},
    **{"minLength": "min_length", "maxLength": "max_length", "multipleOf": "multiple_of"},
    **{"minItems": "min_length", "maxItems": "max_length"},
}


async def load_mcp_tools(servers: Mapping[str, McpServer]) -> dict[str, ToolSpec]:
    """List the servers' tools; each call of one will open a session of its own.

    Raises:
        ConfigError: a server cannot be started or listed, or two tools get one name.
    """
    client, specs = _client(servers), _Tools()
    for name, server in servers.items():
        _add(specs, name, server, await _listed(name, server, client.get_tools(server_name=name)))
    return specs


@asynccontextmanager
async def open_mcp_tools(servers: Mapping[str, McpServer]) -> AsyncIterator[dict[str, ToolSpec]]:
    """Open one session per server and yield the servers' tools, which call through it.

    Raises:
        ConfigError: a server cannot be started or listed, or two tools get one name.
    """
    if not servers:
        yield {}
        return
    # The sessions live in their own task: anyio's scopes must end in the task they began in.
    ready: asyncio.Future[_Tools] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()
    owner = asyncio.create_task(_hold(servers, ready, done))
    try:
        yield await ready
    finally:
        done.set()
        if not ready.done():
            owner.cancel()
        with suppress(*_UNREACHABLE):  # a server that died: its calls have said so
            await owner


async def _hold(servers: _Servers, ready: asyncio.Future[_Tools], done: asyncio.Event) -> None:
    client, specs = _client(servers), _Tools()
    async with AsyncExitStack() as stack:
        try:
            for name, server in servers.items():

                async def listing(name: str = name) -> list[BaseTool]:
                    session = await stack.enter_async_context(client.session(name))
                    return await session_tools(session, server_name=name, handle_tool_errors=False)

                tools = await _listed(name, server, listing())
                _add(specs, name, server, tools, owner=asyncio.current_task())
        except BaseException as exc:  # to the caller as it is: the sessions' groups would wrap it
            return ready.set_exception(exc)
        ready.set_result(specs)
        await done.wait()


def model_from_schema(name: str, schema: Schema) -> type[BaseModel]:
    """Make the pydantic model of a tool's JSON input schema: extra fields are refused unless it
    allows them, and what it says that a model cannot express precisely takes any JSON value."""
    return _Models(schema).model(schema, name)


class _Models:
    """Converts the parts of one JSON schema, resolving each local `$ref` once."""

    def __init__(self, root: Schema) -> None:
        self.root, self.refs = root, dict[str, object]()

    def model(self, schema: Schema, name: str) -> type[BaseModel]:
        properties, required = schema.get("properties"), schema.get("required")
        fields: dict[str, tuple[object, object]] = {}
        for i, (prop, sub) in enumerate(properties.items() if isinstance(properties, dict) else []):
            info = sub if isinstance(sub, dict) else {}
            needed = isinstance(required, list) and prop in required
            python = prop.isidentifier() and not keyword.iskeyword(prop) and prop[:1] != "_"
            key = prop if python and not hasattr(BaseModel, prop) else f"field_{i}"
            field = Field(
                ... if needed else info.get("default"),
                alias=None if key == prop else prop,  # a name Python or pydantic cannot take
                description=d if isinstance(d := info.get("description"), str) else None,
                # No default given: the field is absent unless set, and none is sent (`_runner`).
                json_schema_extra=None if needed or "default" in info else _no_default,
            )
            fields[key] = (self.annotation(sub, name + _camel(prop)), field)
        closed = schema.get("additionalProperties") in (None, False)
        config = ConfigDict(extra="forbid" if closed else "allow", regex_engine="python-re")
        doc = d if isinstance(d := schema.get("description"), str) else None
        return create_model(_camel(name), __config__=config, __doc__=doc, **fields)  # type: ignore[call-overload, no-any-return]

    def annotation(self, schema: JsonValue, name: str) -> object:
        if not isinstance(schema, dict) or not schema:
            return AnyJson
        if isinstance(ref := schema.get("$ref"), str):
            return self._ref(ref, name)
        if "enum" in schema or "const" in schema:
            values = schema.get("enum", [schema.get("const")])
            if isinstance(values, list) and values and all(isinstance(v, _LITERAL) for v in values):
                return Literal.__getitem__(tuple(values))
            return AnyJson
        for key in ("anyOf", "oneOf"):  # oneOf as anyOf: more permissive, never less
            if isinstance(options := schema.get(key), list) and options:
                members = (self.annotation(o, f"{name}{i}") for i, o in enumerate(options))
                return Union.__getitem__(tuple(members))  # one member: that member
        if isinstance(all_of := schema.get("allOf"), list):
            return self.annotation(all_of[0], name) if len(all_of) == 1 else AnyJson
        kinds = schema.get("type", "object" if "properties" in schema else None)
        named = [k for k in kinds if isinstance(k, str)] if isinstance(kinds, list) else [kinds]
        if named and all(isinstance(k, str) for k in named):
            return Union.__getitem__(tuple(self._typed(schema, str(k), name) for k in named))
        return AnyJson

    def _typed(self, schema: Schema, kind: str, name: str) -> object:
        base: object = _SCALARS.get(kind, AnyJson)
        if kind == "array":
            base = list[self.annotation(schema.get("items"), name + "Item")]  # type: ignore[misc]
        elif kind == "object" and isinstance(schema.get("properties"), dict):
            base = self.model(schema, name)
        elif kind == "object":
            base = dict[str, self.annotation(schema.get("additionalProperties"), name)]  # type: ignore[misc]
        limits: dict[str, object] = {
            o: v for k, o in _LIMITS.items() if type(v := schema.get(k)) in (int, float)
        }
        with suppress(re.error):  # a pattern Python cannot compile is left out
            if kind == "string" and isinstance(pattern := schema.get("pattern"), str):
                limits["pattern"] = re.compile(pattern).pattern
        return Annotated[base, Field(**limits)] if limits else base  # type: ignore[call-overload]

    def _ref(self, ref: str, name: str) -> object:
        if ref not in self.refs:  # a ref other than "#/..." resolves to nothing: any JSON
            target: JsonValue = dict(self.root)
            for part in ref.removeprefix("#/").split("/"):
                target = target.get(part) if isinstance(target, dict) else None
            self.refs[ref] = AnyJson  # what a recursive ref takes: a model cannot contain itself
            self.refs[ref] = self.annotation(target, _camel(ref.rsplit("/", 1)[-1]) or name)
        return self.refs[ref]


def _client(servers: Mapping[str, McpServer]) -> MultiServerMCPClient:
    connections = {name: _connection(server) for name, server in servers.items()}
    return MultiServerMCPClient(connections, handle_tool_errors=False)


def _connection(s: McpServer) -> Connection:
    if s.transport == "streamable_http":
        assert s.url is not None  # McpServer checks it
        return {"transport": "streamable_http", "url": s.url, "headers": s.headers}
    assert s.command is not None  # McpServer checks it
    return {"transport": "stdio", "command": s.command, "args": s.args, "env": s.env, "cwd": s.cwd}


async def _listed(name: str, s: McpServer, listing: Awaitable[list[BaseTool]]) -> list[BaseTool]:
    try:
        async with asyncio.timeout(s.timeout_s):
            return await listing
    except _UNREACHABLE as exc:
        what = f"url {s.url!r}" if s.url else f"command {s.command!r}, its args, env and cwd"
        raise ConfigError(
            f"MCP server {name!r} could not be started or listed within {s.timeout_s:g} s "
            f"({_reason(exc)}); check its {what} under the manifest's mcp_servers"
        ) from None


def _add(
    specs: _Tools,
    server: str,
    s: McpServer,
    tools: list[BaseTool],
    *,
    owner: "asyncio.Task[None] | None" = None,
) -> None:
    for tool in tools:
        name = f"{server}_{tool.name}"
        if name in specs:
            raise ConfigError(f"two MCP tools are named {name!r}: rename a server in the manifest")
        schema = tool.args_schema if isinstance(tool.args_schema, dict) else {}
        specs[name] = ToolSpec(
            name=name,
            description=tool.description,
            effect=s.effects.get(tool.name, s.effect),
            arguments=model_from_schema(f"{name}_arguments", schema),
            run=_runner(name, server, tool, owner),
            timeout_s=s.timeout_s,
            max_output_chars=s.max_output_chars,
        )


def _runner(
    name: str, server: str, tool: BaseTool, owner: "asyncio.Task[None] | None"
) -> Callable[[BaseModel], Awaitable[str]]:
    async def run(arguments: BaseModel) -> str:
        # Unset fields are not sent; a null is taken (and sent) only where the schema has one.
        payload = arguments.model_dump(mode="json", by_alias=True, exclude_unset=True)
        try:
            output = await _unless_gone(tool.ainvoke(payload), owner)
        except ToolException as exc:
            raise ToolFailedError(f"{name}: {exc}") from None
        except _UNREACHABLE as exc:
            reason = _reason(exc)
            raise ToolFailedError(f"{name}: MCP server {server!r} failed ({reason})") from None
        blocks = output if isinstance(output, list) else [{"type": "text", "text": output}]
        return "\n".join(
            str(b.get("text")) if b.get("type") == "text" else f"[{b.get('type')}]" for b in blocks
        )

    return run


async def _unless_gone(call: Awaitable[object], owner: "asyncio.Task[None] | None") -> object:
    """Await the call, unless the task holding its session ends first (the server died: its
    pending requests would never be answered)."""
    if owner is None:
        return await call
    pending = asyncio.ensure_future(call)
    await asyncio.wait({pending, owner}, return_when=asyncio.FIRST_COMPLETED)
    if not pending.done():
        pending.cancel()
        with suppress(asyncio.CancelledError, *_UNREACHABLE):
            await pending
        raise ClosedResourceError("the session ended: the server exited")
    return pending.result()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(map(_reason, exc.exceptions))
    return str(exc) or type(exc).__name__


def _no_default(schema: dict[str, JsonValue]) -> None:
    schema.pop("default", None)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", name))
