"""`agentgraph threads artifacts | artifact`: what a thread's steps produced, from the
terminal."""

from pathlib import Path
from typing import Annotated

import typer

from app.settings import Settings
from cli.documents import JsonOpt as Json
from cli.documents import RunFn
from cli.render import err, out, print_json


def register(threads: typer.Typer, run: RunFn) -> None:
    """Add the artefact commands to the `threads` group."""

    @threads.command("artifacts")
    def threads_artifacts(
        thread_id: str,
        save: Annotated[
            Path | None,
            typer.Option("--save", help="Write each artefact into this directory, by name."),
        ] = None,
        as_json: Json = False,
    ) -> None:
        """List the artefacts a thread's steps produced (a tool's structured or large
        output, a rag step's sources); --save writes them out."""

        async def show(settings: Settings) -> int:
            from dataclasses import asdict

            from graphs.service import open_agent
            from graphs.threads import get_snapshot

            saved: list[str] = []
            async with open_agent(settings) as agent:
                found = await agent.artifacts.list(thread_id)
                if not found:
                    await get_snapshot(agent.graph, thread_id)  # an unknown thread is an error
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    for a in found:
                        got = await agent.artifacts.get(thread_id, a.artifact_id)
                        if got is not None:
                            target = save / f"{a.step_id}-{Path(a.name).name}"
                            target.write_bytes(got[1])
                            saved.append(str(target))
            if as_json:
                print_json(
                    {
                        "thread_id": thread_id,
                        "artifacts": [asdict(a) for a in found],
                        "saved": saved,
                    }
                )
                return 0
            if not found:
                out.print(f"thread {thread_id} has no artifacts", markup=False)
            for a in found:
                out.print(
                    f"{a.artifact_id[:12]}  {a.step_id}  {a.name}  {a.media_type}  {a.size} bytes",
                    markup=False,
                )
            for path in saved:
                err.print(f"saved {path}", markup=False)
            return 0

        run(show)

    @threads.command("artifact")
    def threads_artifact(
        thread_id: str,
        artifact_id: Annotated[
            str, typer.Argument(help="The artefact's id, or the start of it (12 characters).")
        ],
        output: Annotated[
            Path | None,
            typer.Option("-o", "--output", help="Write it to this file (default: stdout)."),
        ] = None,
    ) -> None:
        """Write one artefact's content to a file or to stdout."""

        async def write(settings: Settings) -> int:
            import sys

            from graphs.service import open_agent

            async with open_agent(settings) as agent:
                matches = [
                    a
                    for a in await agent.artifacts.list(thread_id)
                    if a.artifact_id.startswith(artifact_id)
                ]
                got = (
                    await agent.artifacts.get(thread_id, matches[0].artifact_id)
                    if len(matches) == 1
                    else None
                )
            if got is None:
                what = "several artifacts match" if matches else "no artifact matches"
                err.print(f"error: {what} {artifact_id!r} in thread {thread_id}", markup=False)
                return 1
            if output is None:
                sys.stdout.buffer.write(got[1])
                sys.stdout.flush()
            else:
                output.write_bytes(got[1])
                err.print(f"wrote {output} ({got[0].size} bytes)", markup=False)
            return 0

        run(write)
