"""How the CLI shows things: live progress on stderr, answers and tables on stdout."""

import json
import shlex
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(document: dict[str, Any]) -> None:
    """Write one JSON document to stdout, nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def plan_table(plan: dict[str, Any], *, title: str) -> Table:
    """Return a plan as a table of its steps."""
    table = Table(title=escape(title), title_justify="left", show_lines=False)
    for column in ("step", "kind", "depends on", "approval", "instruction"):
        table.add_column(column, overflow="fold")
    for s in plan["steps"]:
        table.add_row(
            escape(s["id"]),
            escape(s["kind"]),
            escape(", ".join(s["depends_on"]) or "-"),
            "yes" if s["requires_approval"] else "",
            escape(s["instruction"]),
        )
    return table


def report_table(report: dict[str, Any]) -> Table:
    """Return the run report as a per-node table with a total row."""
    table = Table(title="Run report", title_justify="left")
    table.add_column("node", no_wrap=True)
    for column in ("calls", "tokens in", "tokens out", "cost", "ms", "retries"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, n in report["nodes"].items():
        table.add_row(
            name,
            str(n["calls"]),
            str(n["input_tokens"]),
            str(n["output_tokens"]),
            f"{n['cost']:.6f}",
            f"{n['latency_ms']:.0f}",
            str(n["retries"]),
        )
    table.add_row(
        "total",
        "",
        str(report["input_tokens"]),
        str(report["output_tokens"]),
        f"{report['total_cost']:.6f}",
        f"{report['latency_ms']:.0f}",
        "",
        style="bold",
    )
    lines = fallback_lines(report)
    if lines:
        table.caption = escape("model fallbacks:\n" + "\n".join(lines))
        table.caption_justify = "left"
    return table


def fallback_lines(report: dict[str, Any]) -> list[str]:
    """Say, one line each, which model failed where, why, and which answered instead."""
    return [
        f"{f['node']}"
        + (f" [{f['step_id']}]" if f.get("step_id") else "")
        + f": {f['model']} -> {f.get('answered_by') or 'none'} ({f['reason']}: {f['error']})"
        for f in report.get("model_fallbacks") or []
    ]


class Progress:
    """Prints run events as they arrive: plans, handoffs, token deltas, step results."""

    def __init__(self) -> None:
        self._streaming: tuple[str, str | None] | None = None

    def _end_stream(self) -> None:
        if self._streaming is not None:
            err.print()
            self._streaming = None

    def show(self, event: dict[str, Any]) -> None:
        """Render one event on stderr."""
        kind = event["event"]
        if kind == "delta":
            key = (event["node"], event.get("step_id"))
            if self._streaming != key:
                self._end_stream()
                label = event.get("step_id") or event["node"]
                err.print(f"[dim]  \\[{escape(label)}][/dim] ", end="")
                self._streaming = key
            err.print(event["text"], end="", style="dim", markup=False)
            return
        self._end_stream()
        if kind == "plan_update":
            err.print(
                plan_table(
                    event["plan"],
                    title=f"Plan v{event['version']} ({event['source']}): {event['reason']}",
                )
            )
            if event.get("fallback_reason"):
                err.print(f"[yellow]  {escape(event['fallback_reason'])}[/yellow]")
        elif kind == "handoff":
            step = f" {escape(event['step_id'])}" if event.get("step_id") else ""
            err.print(
                f"[cyan]→ {event['source']} → {event['target']}{step}[/cyan]"
                f" [dim]{escape(event.get('reason', ''))}[/dim]"
            )
        elif kind == "step_result":
            r = event["result"]
            colour = "green" if r["status"] == "done" else "red"
            detail = f": {escape(r['error'])}" if r.get("error") else ""
            mark = "✓" if r["status"] == "done" else "✗"
            err.print(
                f"[{colour}]{mark} {escape(r['step_id'])} {r['status']}[/{colour}] "
                f"[dim]({r['latency_ms']:.0f} ms, {r['attempts']} attempt(s)){detail}[/dim]"
            )
        elif kind == "fallback":
            where = event.get("step_id") or event["node"]
            dropped = "; its partial answer above is dropped" if event.get("discard") else ""
            nxt = event.get("next")
            then = f"asking {escape(nxt)}" if nxt else "no model left"
            err.print(
                f"[yellow]↻ {escape(where)}: {escape(event['model'])} failed "
                f"({event['reason']}), {then}{dropped}[/yellow]"
            )
        elif kind == "interrupt":
            reason = escape(event["payload"]["reason"])
            err.print(f"[yellow]⏸ waiting for approval: {reason}[/yellow]")
        elif kind == "error":
            err.print(f"[red]error: {event['message']}[/red]", markup=False)

    def close(self) -> None:
        """Finish a half-printed line of deltas."""
        self._end_stream()


def resume_command(thread_id: str) -> str:
    """Return the command that answers a thread's pending approval."""
    quoted = shlex.quote(thread_id)
    return f"agentgraph resume {quoted} --approve   (or --reject REASON, --edit PLAN.json)"
