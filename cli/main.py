"""`agentgraph`: ask, resume, and inspect threads, on the embedded defaults or your own."""

import asyncio
import faulthandler
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from app.errors import AgentGraphError, InvalidDecisionError
from app.settings import ApprovalPolicy, PlannerKind, Settings, TimeoutAction, get_settings
from app.telemetry.logs import configure_logging
from app.telemetry.tracing import install_tracing
from cli.documents import JsonOpt
from cli.documents import register as register_document_commands
from cli.evaluate import register as register_eval_commands
from cli.keys import register as register_key_commands
from cli.manifests import register as register_manifest_commands
from cli.render import Progress, err, out, print_json, report_table, resume_command
from cli.replay import register as register_replay_command
from cli.threads import register as register_thread_commands
from nodes.context import Mode, Pattern, Synthesis

if TYPE_CHECKING:
    from graphs.driver import RunOrder

app = typer.Typer(
    help="Plan-and-execute agents on LangGraph, checkpointed to Postgres.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_CODES = {"done": 0, "failed": 1, "interrupted": 3, "rejected": 4}
_state: dict[str, bool] = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state["debug"] = debug
    try:
        settings: Settings | None = get_settings()
    except AgentGraphError:
        settings = None  # the command itself says which setting is bad, in one line
    configure_logging(
        settings.log_format if settings else "text",
        level=logging.DEBUG if debug else logging.WARNING,
    )
    if settings is not None:
        install_tracing(settings)


def _run(coro_fn: Callable[[Settings], Coroutine[Any, Any, int]]) -> None:
    """Run a command; domain errors become one clear line and a non-zero exit code."""
    try:
        code = asyncio.run(coro_fn(get_settings()))
    except AgentGraphError as exc:
        if _state["debug"]:
            raise
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted; the thread keeps every finished step", markup=False)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _document(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": view["status"],
        "thread_id": view["thread_id"],
        "answer": view["answer"],
        "citations": view["citations"],
        "plan": view["plan"],
        "pending_approval": view["pending_approval"],
        "resume_command": resume_command(view["thread_id"])
        if view["status"] == "interrupted"
        else None,
        "report": view["report"],
    }


def _ask_person(payload: dict[str, Any]) -> dict[str, Any]:
    """Show an approval request and read approve / reject / edit from the terminal."""
    err.print(
        f"\n[bold yellow]Approval needed ({payload['gate']})[/bold yellow]: "
        f"{escape(payload['reason'])}"
    )
    err.print(f"risk: {escape(payload['risk'])}")
    if payload.get("error"):
        err.print(f"[red]{escape(payload['error'])}[/red]")
    if payload["gate"] == "final" and payload.get("answer"):
        err.print(f"answer: {escape(payload['answer'])}")
    choices = "[a]pprove / [r]eject" + (" / [e]dit" if payload["gate"] == "plan" else "")
    while True:
        choice = typer.prompt(choices, default="a", err=True).strip().lower()[:1]
        if choice == "a":
            return {"decision": "approve"}
        if choice == "r":
            reason = typer.prompt("reason", default="rejected at the terminal", err=True)
            return {"decision": "reject", "reason": reason}
        if choice == "e" and payload["gate"] == "plan":
            path = typer.prompt("path of the edited plan (JSON)", err=True)
            try:
                return {"decision": "edit", "plan": _read_plan(Path(path)), "reason": "edited"}
            except AgentGraphError as exc:
                err.print(f"[red]{escape(str(exc))}[/red]")


def _read_plan(path: Path) -> dict[str, Any]:
    try:
        plan = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidDecisionError(f"cannot read plan file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InvalidDecisionError(f"plan file {path} is not JSON: {exc}") from None
    if not isinstance(plan, dict):
        raise InvalidDecisionError(f"plan file {path} must hold a JSON object")
    return plan


async def _drive(
    settings: Settings,
    order: "RunOrder",
    *,
    as_json: bool,
    interactive: bool,
) -> int:
    from graphs.driver import RunOrder, claim_run
    from graphs.locks import OwnConnectionLocks
    from graphs.service import open_agent
    from graphs.threads import view_thread

    if not as_json:
        err.print("[dim]opening database…[/dim]")
    async with open_agent(settings) as agent:
        # The thread's lock, as the server takes it, while the graph runs (not while a person
        # decides): no other process runs the thread meanwhile, and a server can tell that it
        # is running rather than cut off.
        locks = OwnConnectionLocks(agent.db.url)
        progress = Progress()
        failure: str | None = None
        while True:
            if isinstance(order.decision, dict):  # the audit log names who approved
                order = replace(order, decision={**order.decision, "by": _terminal_user()})
            async with claim_run(
                agent.graph, locks, settings, order, roster=agent.toolbox.roster()
            ) as run:
                async for event in run.stream():
                    if event["event"] == "error":
                        failure = event["message"]
                    if not as_json:
                        progress.show(event)
            progress.close()
            view = await view_thread(agent.graph, order.thread_id, context=run.context)
            if view["status"] != "interrupted" or not interactive or failure:
                break
            decision = _ask_person(view["pending_approval"] or {})
            order = RunOrder(thread_id=order.thread_id, decision=decision)
    if failure and view["status"] not in ("done", "rejected"):
        view["status"] = "failed"
    document = _document(dict(view))
    if failure:
        document["error"] = failure
    if as_json:
        print_json(document)
    else:
        _print_outcome(document)
    return EXIT_CODES[document["status"]]


def _terminal_user() -> str:
    try:
        return f"{getpass.getuser()} at the terminal"
    except (KeyError, OSError):  # no such user in the password database
        return "a person at the terminal"


def _print_outcome(doc: dict[str, Any]) -> None:
    status = doc["status"]
    if status == "interrupted":
        out.print(f"status: interrupted (thread {doc['thread_id']})", markup=False)
        out.print(f"resume with: {doc['resume_command']}", markup=False)
        return
    if doc.get("answer"):
        out.print("\n[bold]Answer[/bold]")
        out.print(doc["answer"], markup=False)
    if doc.get("error"):
        out.print(f"error: {doc['error']}", markup=False)
    if doc.get("report"):
        out.print(report_table(doc["report"]))
        report = doc["report"]
        out.print(
            f"verdict: {report.get('verdict')} ({escape(str(report.get('verdict_reason')))}); "
            f"plan versions: {report['plan_versions']}, replans: {report['replans']}; "
            f"tokens {report['total_tokens']} of budget {report['token_budget']}"
            + (
                " (estimated: the model reported no usage)"
                if report.get("tokens_estimated")
                else ""
            )
        )
    out.print(f"status: {status}   thread: {doc['thread_id']}", markup=False)


Json = JsonOpt


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question or task.")],
    approval: Annotated[
        ApprovalPolicy | None, typer.Option(help="When to stop for a person's approval.")
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", help="Thread id (new if unset).")
    ] = None,
    approval_timeout: Annotated[
        str | None,
        typer.Option(help="How long an approval waits (30m, 2d, or seconds); unset: forever."),
    ] = None,
    approval_timeout_action: Annotated[
        TimeoutAction | None,
        typer.Option(help="When it passes: reject, approve (low-risk gates only) or escalate."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="'local' or a provider string.")] = None,
    role_model: Annotated[
        list[str] | None,
        typer.Option(
            "--role-model",
            metavar="ROLE=MODEL",
            help="The model of one node role (planner, reasoning, rag, critic, synthesis); "
            "repeatable.",
        ),
    ] = None,
    fallback: Annotated[
        list[str] | None,
        typer.Option(
            "--fallback",
            metavar="[ROLE=]MODEL",
            help="A model to try, in the order given, when a role's model (every role's "
            "without ROLE=) errors, times out or is rate-limited; repeatable.",
        ),
    ] = None,
    planner: Annotated[PlannerKind | None, typer.Option(help="rules or llm.")] = None,
    mode: Annotated[Mode | None, typer.Option(help="auto, direct or plan.")] = None,
    synthesis: Annotated[
        Synthesis | None, typer.Option(help="How parallel answers become one.")
    ] = None,
    pattern: Annotated[
        Pattern | None,
        typer.Option(help="single; committee (agents answer, a judge picks); supervisor."),
    ] = None,
    max_replans: Annotated[int | None, typer.Option(min=0, help="Replan limit.")] = None,
    token_budget: Annotated[
        int | None, typer.Option(min=1, help="Tokens the run may spend.")
    ] = None,
    approve_final: Annotated[
        bool, typer.Option("--approve-final", help="Also ask to approve the final answer.")
    ] = False,
    as_json: Json = False,
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Never prompt; stop at an approval instead.")
    ] = False,
    collection: Annotated[
        str | None, typer.Option(help="Answer from this document collection (rag steps).")
    ] = None,
    documents: Annotated[
        bool,
        typer.Option(
            "--documents/--no-documents",
            help="Without --collection, answer the steps that match an ingested collection "
            "from it (the default), or never.",
        ),
    ] = True,
) -> None:
    """Ask a question: plan, execute, critique and answer, with a run report."""
    from graphs.driver import RunOrder
    from graphs.runs import new_thread_id

    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    overrides = {
        "approval": approval,
        "approval_timeout": approval_timeout,
        "approval_timeout_action": approval_timeout_action,
        "model": model,
        "planner": planner,
        "max_replans": max_replans,
        "token_budget": token_budget,
        "mode": mode,
        "synthesis": synthesis,
        "pattern": pattern,
        "approve_final": approve_final or None,
        "collection": collection,
        "documents": None if documents else False,
        **_routing(role_model or [], fallback or []),
    }
    interactive = not no_input and not as_json and sys.stdin.isatty()
    order = RunOrder(
        thread_id=thread or new_thread_id(),
        request=question,
        options={k: v for k, v in overrides.items() if v is not None},
        new_thread=thread is None,
    )
    _run(lambda s: _drive(s, order, as_json=as_json, interactive=interactive))


def _routing(role_models: list[str], fallbacks: list[str]) -> dict[str, Any]:
    """The run options `models` and `fallbacks` of `--role-model` and `--fallback` values."""
    from app.model_routes import ANY_ROLE, MODEL_ROLES

    models: dict[str, str] = {}
    for given in role_models:
        role, _, spec = given.partition("=")
        if role not in MODEL_ROLES or not spec.strip():
            raise typer.BadParameter(
                f"{given!r}: give ROLE=MODEL, ROLE one of {', '.join(MODEL_ROLES)}",
                param_hint="--role-model",
            )
        models[role] = spec.strip()
    chains: dict[str, list[str]] = {}
    for given in fallbacks:
        role, sep, spec = given.partition("=")
        if not sep or (role not in MODEL_ROLES and role != ANY_ROLE):
            role, spec = ANY_ROLE, given  # no role named: the '=' (if any) is the model's
        chains.setdefault(role, []).append(spec.strip())
    return {"models": models or None, "fallbacks": chains or None}


@app.command()
def resume(
    thread_id: Annotated[str, typer.Argument(help="The interrupted thread.")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve and continue.")] = False,
    reject: Annotated[
        str | None, typer.Option("--reject", metavar="REASON", help="Reject.")
    ] = None,
    edit: Annotated[
        Path | None, typer.Option("--edit", metavar="PLAN.json", help="Run an edited plan.")
    ] = None,
    proceed: Annotated[
        bool,
        typer.Option("--continue", help="Run the rest of a run that a stop or a crash cut off."),
    ] = False,
    as_json: Json = False,
    no_input: Annotated[bool, typer.Option("--no-input", help="Never prompt.")] = False,
) -> None:
    """Answer a pending approval and continue the run, or continue a run that was cut off."""
    chosen = [
        flag
        for flag, on in (
            ("--approve", approve),
            ("--reject", reject is not None),
            ("--edit", edit is not None),
            ("--continue", proceed),
        )
        if on
    ]
    if len(chosen) != 1:
        raise typer.BadParameter(
            "give exactly one of --approve, --reject REASON, --edit PLAN.json, --continue"
        )
    decision: dict[str, Any] | None = None
    if edit is not None:
        try:
            decision = {
                "decision": "edit",
                "plan": _read_plan(edit),
                "reason": f"edited plan from {edit}",
            }
        except AgentGraphError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None
    elif reject is not None:
        decision = {"decision": "reject", "reason": reject}
    elif approve:
        decision = {"decision": "approve"}
    from graphs.driver import RunOrder

    interactive = not no_input and not as_json and sys.stdin.isatty()
    order = RunOrder(thread_id=thread_id, decision=decision, proceed=proceed)
    _run(lambda s: _drive(s, order, as_json=as_json, interactive=interactive))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(min=1, max=64, help="Server processes sharing the port (about one per core)."),
    ] = 1,
    worker_timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="With --workers above 1: seconds a worker's event loop may be stuck, or its "
            "health check go unanswered, before the worker is replaced (default: "
            "AGENTGRAPH_WORKER_TIMEOUT_S, else 60; 0: no event-loop watch, and uvicorn's 5 s "
            "health check).",
            show_default=False,
        ),
    ] = None,
    queue_worker: Annotated[
        bool,
        typer.Option(
            "--queue-worker/--no-queue-worker",
            help="Also execute background runs and crons in the server's process(es); "
            "--no-queue-worker leaves them to 'agentgraph worker' processes "
            "(default: AGENTGRAPH_SERVE_WORKER, else on).",
            show_default=False,
        ),
    ] = True,
) -> None:
    """Serve the HTTP API (SSE runs, background runs, threads, approvals, LangServe) until
    interrupted."""
    from server.serve import WORKER_TIMEOUT_S
    from server.serve import serve as run_server

    logging.getLogger().setLevel(logging.DEBUG if _state["debug"] else logging.INFO)
    if not queue_worker:  # the server's worker processes read it from the environment
        os.environ["AGENTGRAPH_SERVE_WORKER"] = "false"
        get_settings.cache_clear()
    try:
        settings = get_settings()  # a bad setting fails here, in one line, before any start
        if worker_timeout is None:
            worker_timeout = settings.worker_timeout_s
        run_server(
            host=host,
            port=port,
            workers=workers,
            worker_timeout_s=WORKER_TIMEOUT_S if worker_timeout is None else worker_timeout,
        )
    except AgentGraphError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Runs executed at once (default: AGENTGRAPH_WORKER_CONCURRENCY, else 4).",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve the worker's Prometheus metrics at http://HOST:PORT/metrics "
            "(default: AGENTGRAPH_WORKER_METRICS_PORT, else none).",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="Address for --metrics-port (default: AGENTGRAPH_WORKER_METRICS_HOST, "
            "else 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Execute background runs and crons from the queue until interrupted. A stopped
    worker's runs go on from their last checkpoint on another worker."""
    logging.getLogger().setLevel(logging.DEBUG if _state["debug"] else logging.INFO)

    async def go(settings: Settings) -> int:
        from app.telemetry.metrics import serve_metrics
        from graphs.service import open_agent
        from graphs.worker import run_worker

        given = {
            "worker_concurrency": concurrency,
            "worker_metrics_port": metrics_port,
            "worker_metrics_host": metrics_host,
        }
        settings = settings.model_copy(update={k: v for k, v in given.items() if v is not None})
        port, host = settings.worker_metrics_port, settings.worker_metrics_host
        stop_metrics = serve_metrics(host, port) if port is not None else None
        try:
            async with open_agent(settings) as agent:
                err.print(
                    f"worker: executing up to {settings.worker_concurrency} background runs "
                    "at once (Ctrl-C to stop)"
                    + (f"; metrics at http://{host}:{port}/metrics" if port is not None else ""),
                    markup=False,
                )
                await run_worker(agent, settings, install_signal_handlers=True)
        finally:
            if stop_metrics is not None:
                stop_metrics()
        return 0

    _run(go)


register_document_commands(app, _run)
register_thread_commands(app, _run)
register_key_commands(app, _run)
register_manifest_commands(app)
register_eval_commands(app, _run)
register_replay_command(app, _run)


def main() -> None:
    """Entry point of the `agentgraph` command."""
    # A crash in native code (llama.cpp, say) prints the Python stack it happened under
    # instead of ending the process without a word; child processes inherit it.
    faulthandler.enable()
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    app()
