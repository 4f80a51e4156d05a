"""`agentgraph threads show | history | list`: stored threads from the terminal."""

import shlex
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.settings import Settings
from cli.documents import JsonOpt as Json
from cli.documents import RunFn
from cli.render import out, plan_table, print_json, report_table, resume_command


def register(app: typer.Typer, run: RunFn) -> None:
    """Add the `threads` commands to the CLI."""
    threads = typer.Typer(help="Inspect stored threads.", no_args_is_help=True)
    app.add_typer(threads, name="threads")

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
