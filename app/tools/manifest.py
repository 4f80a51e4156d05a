"""The manifest (`agentgraph.yaml`): the agents a plan may assign steps to and the tools each
may call, the built-in tools' settings, the MCP servers to take more tools from, and the
policy. It is validated on load; an error names the file, the line, the path in the document
and what to change. With no file, the default manifest that ships with agentgraph applies.
"""

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from yaml.nodes import MappingNode, Node, SequenceNode

from app.errors import ManifestError
from app.model_routes import MAX_FALLBACKS, MAX_SPEC_CHARS
from app.tools.registry import Effect

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
MCP_GRANT = re.compile(r"^mcp:([a-z][a-z0-9_-]{0,39})$")
"""An agent's grant of every tool of one MCP server: `mcp:<server>`."""
DEFAULT_MANIFEST = "default_manifest.yaml"
ModelSpec = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_SPEC_CHARS)
]
"""A chat model spec: 'local', a provider string, or a model an OpenAI-compatible server
serves."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolLimits(_Strict):
    """Limits every tool takes."""

    timeout_s: float = Field(default=10.0, gt=0, le=600, description="Seconds a call may run.")
    max_output_chars: int = Field(
        default=4_000, ge=100, le=200_000, description="Characters of a result kept."
    )


class DocumentSearchConfig(ToolLimits):
    """`document_search`: the document collections as a tool."""

    collections: list[str] | None = Field(
        default=None, description="Collections it may search; all of them when unset."
    )
    k: int = Field(default=4, ge=1, le=20, description="Chunks a search returns.")


class FileToolConfig(ToolLimits):
    """`read_file` and `write_file`: files under one directory, and nowhere else."""

    root: Path = Field(description="The directory the tool may read or write under.")
    max_bytes: int = Field(default=200_000, ge=1, le=10_000_000, description="Largest file.")


class HttpGetConfig(ToolLimits):
    """`http_get`: GET requests to the listed hosts only."""

    allow_hosts: list[str] = Field(
        min_length=1, description="Host names it may reach, such as 'example.org'."
    )
    allow_loopback: bool = Field(
        default=False, description="Whether 127.0.0.1 and localhost may be listed."
    )


class BuiltinTools(_Strict):
    """The built-in tools a manifest enables, each with its settings. A tool not listed here
    does not exist for the run; `http_get` and the file tools need settings, so they are off
    until a manifest gives them."""

    calculator: ToolLimits | None = None
    document_search: DocumentSearchConfig | None = None
    read_file: FileToolConfig | None = None
    write_file: FileToolConfig | None = None
    http_get: HttpGetConfig | None = None

    def enabled(self) -> list[str]:
        """The names of the tools this manifest enables."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


class McpServer(_Strict):
    """An MCP server whose tools the agents may be granted (`mcp:<name>`); each tool is named
    `<server>_<tool>`."""

    transport: Literal["stdio", "streamable_http"]
    command: str | None = Field(default=None, description="stdio: the program to start.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] | None = Field(default=None, description="stdio: its environment.")
    cwd: Path | None = Field(default=None, description="stdio: its working directory.")
    url: str | None = Field(default=None, description="streamable_http: the server's URL.")
    headers: dict[str, str] | None = Field(default=None, description="streamable_http.")
    effect: Effect = Field(
        default="external", description="The effect of its tools unless `effects` says otherwise."
    )
    effects: dict[str, Effect] = Field(
        default_factory=dict, description="The effect of named tools of this server."
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_output_chars: int = Field(default=4_000, ge=100, le=200_000)

    @model_validator(mode="after")
    def _transport_fields(self) -> "McpServer":
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio server needs 'command' (and 'args')")
        if self.transport == "streamable_http" and not self.url:
            raise ValueError("a streamable_http server needs 'url'")
        return self


class AgentEntry(_Strict):
    """An agent a plan step can be assigned to."""

    name: str = Field(pattern=NAME_PATTERN, description="How plans and grants name it.")
    description: str = Field(min_length=1, description="What it is for, as the planner sees.")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SPEC_CHARS,
        description="Its chat model; the run's route for the step's role if unset.",
    )
    fallbacks: list[ModelSpec] = Field(
        default_factory=list,
        max_length=MAX_FALLBACKS,
        description="Chat models to try in order when its model errors, times out or is "
        "rate-limited; the run's fallbacks for the step's role if empty.",
    )
    prompt: str | None = Field(default=None, description="Instructions its steps are given.")
    tools: list[str] = Field(
        default_factory=list,
        description="Tools it may call: built-in names, `<server>_<tool>`, or `mcp:<server>`.",
    )


class Policy(_Strict):
    """How tool calls are allowed."""

    approval_for: list[Effect] = Field(
        default_factory=lambda: list[Effect](["write", "external"]),
        description="Effects whose tools run only in a step a person approved.",
    )


class Manifest(_Strict):
    """A whole manifest."""

    version: Literal[1] = 1
    agents: list[AgentEntry] = Field(min_length=1)
    tools: BuiltinTools = Field(default_factory=BuiltinTools)
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)
    policy: Policy = Field(default_factory=Policy)

    @model_validator(mode="after")
    def _references(self) -> "Manifest":
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"agent names must be unique: {', '.join(dupes)} more than once")
        for server in self.mcp_servers:
            if not re.match(NAME_PATTERN, server):
                raise ValueError(f"MCP server name {server!r} must match {NAME_PATTERN}")
        return self

    def agent(self, name: str) -> AgentEntry | None:
        """The agent of that name, if the manifest has one."""
        return next((a for a in self.agents if a.name == name), None)

    def without_mcp(self) -> "Manifest":
        """This manifest with no MCP servers, and no agent granted their tools."""
        builtins = set(self.tools.enabled())
        agents = [
            a.model_copy(update={"tools": [t for t in a.tools if t in builtins]})
            for a in self.agents
        ]
        return self.model_copy(update={"mcp_servers": {}, "agents": agents})


def grant_problems(manifest: Manifest) -> list[tuple[tuple[str | int, ...], str]]:
    """Grants that name no tool the manifest declares, as (path, problem) pairs.

    An MCP tool (`<server>_<tool>`) is checked against its server here and against the
    server's real tool list when the tools are loaded.
    """
    builtins = manifest.tools.enabled()
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, agent in enumerate(manifest.agents):
        for j, grant in enumerate(agent.tools):
            path: tuple[str | int, ...] = ("agents", i, "tools", j)
            if grant in builtins:
                continue
            if (m := MCP_GRANT.match(grant)) and m.group(1) in manifest.mcp_servers:
                continue
            if any(grant.startswith(f"{server}_") for server in manifest.mcp_servers):
                continue
            known = [*builtins, *(f"mcp:{s}" for s in manifest.mcp_servers)]
            problems.append(
                (
                    path,
                    f"agent {agent.name!r} is granted {grant!r}, which this manifest does not "
                    f"declare; declare it under 'tools' or 'mcp_servers', or grant one of: "
                    f"{', '.join(known) or 'nothing declared'}",
                )
            )
    return problems


def parse_manifest(text: str, *, source: str) -> Manifest:
    """Parse and validate a manifest's YAML text; `source` names it in errors.

    Raises:
        ManifestError: the YAML does not parse, or the manifest is invalid, with every problem.
    """
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest is a mapping with at least 'agents'")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            "\n".join(_located(source, tree, tuple(e["loc"]), _explain(e)) for e in exc.errors())
        ) from None
    problems = grant_problems(manifest)
    if problems:
        raise ManifestError(
            "\n".join(_located(source, tree, path, problem) for path, problem in problems)
        )
    return manifest


def load_manifest(path: Path | None) -> Manifest:
    """Load the manifest at `path`, or the default one when `path` is None.

    Raises:
        ManifestError: the file cannot be read or is invalid.
    """
    if path is None:
        return default_manifest()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from None
    return parse_manifest(text, source=str(path))


@cache
def default_manifest() -> Manifest:
    """The manifest that applies with no file."""
    return parse_manifest(default_manifest_text(), source=DEFAULT_MANIFEST)


def default_manifest_text() -> str:
    """The default manifest's YAML, to start one's own from."""
    text: str = resources.files("app.tools").joinpath(DEFAULT_MANIFEST).read_text("utf-8")
    return text


def _explain(error: Any) -> str:
    kind, msg, loc = error["type"], error["msg"], error["loc"]
    if kind == "extra_forbidden":
        field = loc[-1]
        if len(loc) == 2 and loc[0] == "tools":
            return (
                f"{field!r} is not a built-in tool (built-ins: "
                f"{', '.join(BuiltinTools.model_fields)}); tools of other programs come from "
                "'mcp_servers'"
            )
        return f"unknown field {field!r}: remove it or check its spelling"
    if kind == "missing":
        return f"{loc[-1]!r} is required here"
    return str(msg).removeprefix("Value error, ")


def _located(source: str, tree: Node | None, path: tuple[str | int, ...], problem: str) -> str:
    shown = ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")
    line = _line_of(tree, path)
    where = f"{source}:{line}" if line else source
    return f"{where}: {shown or 'manifest'}: {problem}"


def _line_of(tree: Node | None, path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the deepest node the path reaches in the YAML tree."""
    node, line = tree, (tree.start_mark.line + 1 if tree is not None else None)
    for part in path:
        if isinstance(node, MappingNode):
            found = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if found is None:
                return line
            node, line = found, (key.start_mark.line + 1 if key is not None else line)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
