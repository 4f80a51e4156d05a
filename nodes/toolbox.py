"""The toolbox: the manifest's agents, every tool they may call (the built-ins it enables,
the document search over the library, the MCP servers' tools) and the policy. The planner,
the plan checks, the approval gate and the tool worker all read one toolbox.
"""

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field

from app.errors import ManifestError, RetrievalError, ToolArgumentError
from app.model_routes import ModelRole, Route
from app.settings import get_settings
from app.tools.files import read_file_tool, write_file_tool
from app.tools.http import http_get_tool
from app.tools.manifest import (
    MCP_GRANT,
    DocumentSearchConfig,
    Manifest,
    load_manifest,
)
from app.tools.mcp import load_mcp_tools
from app.tools.policy import ToolPolicy
from app.tools.registry import CALCULATOR, ToolSpec, with_limits
from nodes.context import Context
from nodes.plans import Roster
from retrievers.service import Library, search

logger = logging.getLogger(__name__)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Toolbox:
    """What the agents of a manifest may do."""

    manifest: Manifest
    tools: dict[str, ToolSpec]
    """Every tool, by name."""
    policy: ToolPolicy

    @property
    def default_agent(self) -> str:
        """The agent a step runs as when its plan names none: the manifest's first."""
        return self.manifest.agents[0].name

    def model_of(self, agent: str, run_model: str) -> str:
        """The chat model `agent` answers with: its manifest's, or the run's."""
        entry = self.manifest.agent(agent)
        return (entry.model if entry else None) or run_model

    def route_of(self, agent: str, context: Context, role: ModelRole = "reasoning") -> Route:
        """The models `agent` answers a `role` call with, in order: its manifest's model and
        fallbacks, else the run's route for the role."""
        entry = self.manifest.agent(agent)
        return context.route(
            role,
            agent_model=entry.model if entry else None,
            agent_fallbacks=entry.fallbacks if entry else None,
        )

    def prompt_of(self, agent: str, base: str) -> str:
        """The system prompt of `agent`: `base`, then its manifest prompt if it has one."""
        entry = self.manifest.agent(agent)
        return f"{base}\n{entry.prompt}" if entry and entry.prompt else base

    def granted(self, agent: str) -> list[ToolSpec]:
        """The tools `agent` may call, in the manifest's order."""
        names = self.policy.grants.get(agent, frozenset())
        return [spec for name, spec in self.tools.items() if name in names]

    def roster(self) -> Roster:
        """What plan checks need: the agents' grants, the gated tools, the planner's cues."""
        return Roster(
            grants=self.policy.grants,
            gated=frozenset(n for n, s in self.tools.items() if self.policy.needs_approval(s)),
            default_agent=self.default_agent,
            hints={n: s.hint for n, s in self.tools.items() if s.hint is not None},
            effects={n: s.effect for n, s in self.tools.items()},
        )


def build_toolbox(
    manifest: Manifest,
    *,
    library: Library | None = None,
    extra_tools: Mapping[str, ToolSpec] | None = None,
) -> Toolbox:
    """Make the toolbox of a manifest; `extra_tools` are the MCP servers' (already loaded).

    Raises:
        ManifestError: an agent is granted an MCP tool its server does not have.
    """
    config = manifest.tools
    tools: dict[str, ToolSpec] = {}
    if config.calculator is not None:
        tools["calculator"] = with_limits(
            CALCULATOR,
            timeout_s=config.calculator.timeout_s,
            max_output_chars=config.calculator.max_output_chars,
        )
    if config.document_search is not None:
        tools["document_search"] = document_search_tool(
            config.document_search, library=library or Library()
        )
    if config.read_file is not None:
        tools["read_file"] = read_file_tool(config.read_file)
    if config.write_file is not None:
        tools["write_file"] = write_file_tool(config.write_file)
    if config.http_get is not None:
        tools["http_get"] = http_get_tool(config.http_get)
    tools.update(extra_tools or {})
    grants: dict[str, frozenset[str]] = {}
    for agent in manifest.agents:
        names: set[str] = set()
        for grant in agent.tools:
            if (m := MCP_GRANT.match(grant)) is not None:
                names.update(n for n in tools if n.startswith(f"{m.group(1)}_"))
            elif grant in tools:
                names.add(grant)
            else:
                raise ManifestError(
                    f"agent {agent.name!r} is granted {grant!r}, which its MCP server does "
                    f"not offer (its tools: {', '.join(sorted(tools)) or 'none'})"
                )
        grants[agent.name] = frozenset(names)
    policy = ToolPolicy(grants=grants, approval_for=frozenset(manifest.policy.approval_for))
    return Toolbox(manifest=manifest, tools=tools, policy=policy)


async def settings_toolbox() -> Toolbox:
    """The toolbox of the process settings' manifest: what a graph compiled with no toolbox
    (the one `langgraph dev` serves) uses. Made on first use and kept for the process. Its
    MCP tools open a session per call (no process holds sessions open for such a graph), so
    a stdio server is started for each call.

    Raises:
        ManifestError: the manifest is invalid, or grants a tool its MCP server lacks.
        ConfigError: an MCP server cannot be started or listed.
    """
    if _SETTINGS_TOOLBOX:
        return _SETTINGS_TOOLBOX[0]
    async with _SETTINGS_LOCK:
        if not _SETTINGS_TOOLBOX:
            manifest = load_manifest(get_settings().manifest)
            extra = await load_mcp_tools(manifest.mcp_servers) if manifest.mcp_servers else {}
            _SETTINGS_TOOLBOX.append(build_toolbox(manifest, extra_tools=extra))
    return _SETTINGS_TOOLBOX[0]


_SETTINGS_TOOLBOX: list[Toolbox] = []
_SETTINGS_LOCK = asyncio.Lock()


class DocumentSearchArgs(BaseModel):
    """Arguments of `document_search`."""

    query: str = Field(description="What to look for.", min_length=1, max_length=500)
    collection: str | None = Field(
        default=None,
        description="The collection to search; the default collection when unset.",
        max_length=100,
    )


def document_search_tool(config: DocumentSearchConfig, *, library: Library) -> ToolSpec:
    """Return `document_search` over `library`: the chunks that best match a query, each
    with its chunk id and source."""

    async def run(args: BaseModel) -> str:
        assert isinstance(args, DocumentSearchArgs)
        collection = args.collection or library.default_collection
        if config.collections is not None and collection not in config.collections:
            raise ToolArgumentError(
                f"collection {collection!r} may not be searched (allowed: "
                f"{', '.join(config.collections)})"
            )
        try:
            async with library.open(collection) as (store, embedder):
                hits = await search(store, embedder, args.query, k=config.k)
        except RetrievalError as exc:
            raise ToolArgumentError(str(exc)) from None
        if not hits:
            return f"nothing in {collection!r} matches {args.query!r}"
        return "\n\n".join(f"[{h.chunk_id}] ({h.source}) {_one_line(h.content)}" for h in hits)

    return ToolSpec(
        name="document_search",
        description="Search the document collections; returns the best-matching passages "
        "with their chunk ids and sources.",
        effect="read",
        arguments=DocumentSearchArgs,
        run=run,
        timeout_s=config.timeout_s,
        max_output_chars=config.max_output_chars,
    )


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


async def toolbox_or_settings(toolbox: Toolbox | None) -> Toolbox:
    """The given toolbox, or the settings' one (made when first needed)."""
    return toolbox if toolbox is not None else await settings_toolbox()
