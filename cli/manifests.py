"""`agentgraph manifest check | show`: validate a manifest, and see the agents and tools of the
one in effect."""

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from app.errors import AgentGraphError
from app.settings import get_settings
from app.tools.manifest import Manifest, default_manifest_text, load_manifest
from app.tools.mcp import open_mcp_tools
from cli.render import err, out
from nodes.toolbox import Toolbox, build_toolbox


def register(app: typer.Typer) -> None:
    """Add the `manifest` commands to the CLI."""
    manifests = typer.Typer(help="Agent manifests: agents, their tools and the policy.")
    app.add_typer(manifests, name="manifest", no_args_is_help=True)

    @manifests.command("check")
    def check(
        path: Annotated[Path, typer.Argument(help="The manifest (agentgraph.yaml).")],
        connect: Annotated[
            bool,
            typer.Option(
                "--connect/--no-connect",
                help="Also start its MCP servers and check every agent's grants.",
            ),
        ] = True,
    ) -> None:
        """Validate a manifest; on an error, print where it is and what to change (exit 1)."""
        try:
            manifest = load_manifest(path)
            toolbox = asyncio.run(_toolbox(manifest, connect=connect))
        except AgentGraphError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        what = f"{len(manifest.agents)} agents, {len(toolbox.tools)} tools"
        if manifest.mcp_servers and not connect:
            what += " (MCP servers not started)"
        out.print(f"{escape(str(path))}: valid: {what}")
        out.print(_table(toolbox))

    @manifests.command("show")
    def show(
        tools: Annotated[
            bool, typer.Option("--tools", help="List the agents' tools instead of the YAML.")
        ] = False,
    ) -> None:
        """Print the manifest in effect: AGENTGRAPH_MANIFEST's file, or the default one."""
        path = get_settings().manifest
        try:
            if not tools:
                text = path.read_text(encoding="utf-8") if path else default_manifest_text()
                typer.echo(text, nl=False)
                return
            toolbox = asyncio.run(_toolbox(load_manifest(path), connect=True))
        except (AgentGraphError, OSError) as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        out.print(_table(toolbox))


async def _toolbox(manifest: Manifest, *, connect: bool) -> Toolbox:
    if not connect or not manifest.mcp_servers:
        return build_toolbox(manifest.without_mcp())
    async with open_mcp_tools(manifest.mcp_servers) as mcp_tools:
        return build_toolbox(manifest, extra_tools=mcp_tools)


def _table(toolbox: Toolbox) -> Table:
    table = Table("agent", "tool", "effect", "approval", "description")
    for agent in toolbox.manifest.agents:
        granted = toolbox.granted(agent.name)
        for i, spec in enumerate(granted or [None]):
            name = agent.name if i == 0 else ""
            if spec is None:
                table.add_row(name, "(none)", "", "", "")
                continue
            gate = "required" if toolbox.policy.needs_approval(spec) else "not needed"
            table.add_row(name, spec.name, spec.effect, gate, escape(_short(spec.description)))
    return table


def _short(text: str, limit: int = 60) -> str:
    first = text.split(". ")[0].split(";")[0].split(" (")[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"
