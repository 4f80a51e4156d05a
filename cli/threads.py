"""`agentgraph threads show | history | list | delete | prune`: stored threads from the
terminal."""

import json
import shlex
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.settings import Settings
from cli.artifacts import register as register_artifact_commands
from cli.documents import JsonOpt as Json
from cli.documents import RunFn
from cli.render import err, out, plan_table, print_json, report_table, resume_command


def register(app: typer.Typer, run: RunFn) -> None:
    """Add the `threads` commands to the CLI."""
    threads = typer.Typer(help="Inspect, delete and prune stored threads.", no_args_is_help=True)
    app.add_typer(threads, name="threads")
    register_artifact_commands(threads, run)

    @threads.command("show")
    def threads_show(thread_id: str, as_json: Json = False) -> None:
        """Show a thread: status, plan history, pending approval, answer, report."""

        async def show(settings: Settings) -> int:
            from graphs.locks import locked_threads
            from graphs.service import open_agent
            from graphs.threads import run_state, view_thread

            async with open_agent(settings) as agent:
                found = await view_thread(agent.graph, thread_id)
                async with agent.db.pool.connection() as conn:
                    running = thread_id in await locked_threads(conn, [thread_id])
            status, can_continue = run_state(found, running=running)
            view: dict[str, Any] = {**found, "status": status, "can_continue": can_continue}
            if as_json:
                print_json(view)
                return 0
            out.print(f"thread {thread_id}: [bold]{view['status']}[/bold]")
            out.print(f"request: {escape(view['request'] or '')}")
            for rev in view["plan_history"]:
                out.print(
                    plan_table(
                        rev["plan"],
                        title=f"Plan v{rev['version']} ({rev['source']}): {rev['reason']}",
                    )
                )
            if view["pending_approval"]:
                out.print(f"pending approval: {escape(view['pending_approval']['reason'])}")
                out.print(f"resume with: {resume_command(thread_id)}", markup=False)
            if view["can_continue"]:
                out.print("the run was cut off with steps left (a stop or a crash)")
                out.print(
                    f"continue with: agentgraph resume {shlex.quote(thread_id)} --continue",
                    markup=False,
                )
            if view["answer"]:
                out.print("[bold]Answer[/bold]")
                out.print(view["answer"], markup=False)
            if view["report"]:
                out.print(report_table(view["report"]))
            return 0

        run(show)

    @threads.command("history")
    def threads_history(thread_id: str, as_json: Json = False) -> None:
        """List a thread's checkpoints, newest first."""

        async def show(settings: Settings) -> int:
            from rich.table import Table

            from graphs.service import open_agent
            from graphs.threads import history

            async with open_agent(settings) as agent:
                items = await history(agent.graph, thread_id)
            if as_json:
                print_json({"thread_id": thread_id, "checkpoints": items})
                return 0
            table = Table(title=f"Checkpoints of {thread_id}, newest first", title_justify="left")
            for column in ("checkpoint id", "step", "source", "wrote", "next", "created"):
                table.add_column(column)
            for c in items:
                table.add_row(
                    c["checkpoint_id"],
                    str(c["step"]),
                    c["source"] or "",
                    ", ".join(c["writes"]),
                    ", ".join(c["next"]),
                    c["created_at"] or "",
                )
            out.print(table)
            return 0

        run(show)

    @threads.command("list")
    def threads_list(
        limit: Annotated[int, typer.Option(min=1, help="How many.")] = 20, as_json: Json = False
    ) -> None:
        """List the most recent threads."""

        async def show(settings: Settings) -> int:
            from graphs.service import open_agent

            async with open_agent(settings) as agent:
                rows = await agent.list_threads(limit=limit)
            if as_json:
                print_json({"threads": rows})
                return 0
            for row in rows:
                out.print(f"{row['thread_id']}  ({row['checkpoints']} checkpoints)")
            return 0

        run(show)

    @threads.command("delete")
    def threads_delete(
        thread_id: str,
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False,
        as_json: Json = False,
    ) -> None:
        """Delete a thread wholly: its checkpoints, channel values and pending writes."""

        async def drop(settings: Settings) -> int:
            from app.auth import Keys
            from app.responses import Responses
            from graphs.retention import delete_thread
            from graphs.service import open_agent

            if not yes and not _confirm(f"Delete thread {thread_id} and all it holds?"):
                err.print("not deleted (give --yes to delete without asking)", markup=False)
                return 1
            async with open_agent(settings) as agent:
                deleted = await delete_thread(agent.db.pool, thread_id)
                if deleted:
                    keys = Keys(agent.db.pool)
                    await keys.setup()
                    await keys.forget(thread_id)
                    responses = Responses(agent.db.pool)
                    await responses.setup()
                    await responses.forget(thread_id)
                    await agent.audit.forget(thread_id)
            if not deleted:
                err.print(f"error: unknown thread {thread_id}", markup=False)
                return 1
            if as_json:
                print_json({"thread_id": thread_id, "checkpoints_deleted": deleted})
            else:
                out.print(f"deleted thread {thread_id} ({deleted} checkpoints)", markup=False)
            return 0

        run(drop)

    @app.command("audit")
    def audit(thread_id: str, as_json: Json = False) -> None:
        """List a thread's tool calls: step, tool, arguments (secrets redacted), status,
        result size, duration and the approval that allowed each."""

        async def show_calls(settings: Settings) -> int:
            from dataclasses import asdict

            from graphs.service import open_agent
            from graphs.threads import get_snapshot

            async with open_agent(settings) as agent:
                calls = await agent.audit.calls(thread_id)
                if not calls:
                    await get_snapshot(agent.graph, thread_id)  # an unknown thread is an error
            if as_json:
                print_json({"thread_id": thread_id, "calls": [asdict(c) for c in calls]})
                return 0
            if not calls:
                out.print(f"thread {thread_id} made no tool calls", markup=False)
            for c in calls:
                out.print(
                    f"{c.created_at:%Y-%m-%d %H:%M:%S}  {c.step_id}  {c.agent}  {c.tool}"
                    f"({json.dumps(c.arguments)})  {c.status}  {c.result_chars} chars  "
                    f"{c.duration_ms:.1f} ms  approval: {c.approval or '-'}"
                    + (f"  error: {c.error}" if c.error else ""),
                    markup=False,
                )
            return 0

        run(show_calls)

    @threads.command("prune")
    def threads_prune(
        older_than: Annotated[
            str, typer.Option("--older-than", help="Age of the checkpoints to prune: 30d, 12h.")
        ],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Say what would go; change nothing.")
        ] = False,
        as_json: Json = False,
    ) -> None:
        """Prune old checkpoints that nothing needs: each thread's latest, the heads of its
        branches and its fork points stay."""

        async def prune_all(settings: Settings) -> int:
            from dataclasses import asdict
            from datetime import UTC, datetime

            from app.spans import parse_span
            from graphs.retention import prune
            from graphs.service import open_agent

            cutoff = datetime.now(UTC) - parse_span(older_than, what="--older-than")
            async with open_agent(settings) as agent:
                report = await prune(agent.db.pool, cutoff=cutoff, dry_run=dry_run)
            if as_json:
                print_json({**asdict(report), "cutoff": cutoff.isoformat()})
                return 0
            verb = "would delete" if dry_run else "deleted"
            out.print(
                f"{verb} {report.checkpoints_deleted} checkpoints of {report.threads_pruned} "
                f"threads (older than {cutoff.isoformat(timespec='seconds')}); "
                f"{report.checkpoints_kept} kept",
                markup=False,
            )
            if not dry_run:
                out.print(
                    f"{report.writes_deleted} pending writes and {report.blobs_deleted} "
                    "channel values went with them",
                    markup=False,
                )
            out.print(
                f"{verb} {report.records_deleted} replay records and "
                f"{report.run_events_deleted} background-run events of older runs",
                markup=False,
            )
            if report.threads_busy:
                out.print(
                    f"{len(report.threads_busy)} threads were being run and were skipped",
                    markup=False,
                )
            return 0

        run(prune_all)


def _confirm(question: str) -> bool:
    """Ask at a terminal; anywhere else the answer is no."""
    import sys

    if not sys.stdin.isatty():
        return False
    return typer.confirm(question, default=False)
