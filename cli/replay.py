"""`agentgraph replay THREAD_ID`: a thread's runs again, as they were shown live, calling no
model."""

from typing import Annotated, Any

import typer

from app.settings import Settings
from cli.documents import JsonOpt as Json
from cli.documents import RunFn
from cli.render import Progress, out, print_json, report_table


def register(app: typer.Typer, run: RunFn) -> None:
    """Add the `replay` command to the CLI."""

    @app.command("replay")
    def replay_thread(
        thread_id: str,
        speed: Annotated[
            float,
            typer.Option(
                "--speed", min=0, help="1: as it happened; 10: ten times faster; 0: at once."
            ),
        ] = 1.0,
        as_json: Json = False,
    ) -> None:
        """Replay a thread's runs from what was stored (plans, handoffs, token deltas, step
        results, approvals, answers) at their original pace or faster."""

        from graphs.replay import check_speed

        try:
            check_speed(speed)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--speed") from exc

        async def play(settings: Settings) -> int:
            from graphs.replay import replay
            from graphs.service import open_agent

            events: list[dict[str, Any]] = []
            progress = Progress()
            async with open_agent(settings) as agent:
                async for event in replay(agent.graph, agent.db.pool, thread_id, speed=speed):
                    if as_json:
                        events.append(event)
                        continue
                    progress.show(event)
                    if event["event"] == "final":
                        progress.close()
                        _show_final(event)
            progress.close()
            if as_json:
                print_json({"thread_id": thread_id, "speed": speed, "events": events})
            return 0

        run(play)


def _show_final(event: dict[str, Any]) -> None:
    if event.get("answer"):
        out.print("\n[bold]Answer[/bold]")
        out.print(event["answer"], markup=False)
    if event.get("report"):
        out.print(report_table(event["report"]))
    out.print(f"status: {event.get('status')}", markup=False)
