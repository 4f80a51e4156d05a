"""What routes need from the running app: the agent, the settings, the run manager."""

from dataclasses import dataclass

import procrastinate
from fastapi import Request

from app.auth import Keys
from app.responses import Responses
from app.settings import Settings
from graphs.agent import AgentGraph
from graphs.run_log import RunFeed
from graphs.service import Agent
from graphs.threads import view_thread
from server.runner import RunHandle, RunManager
from server.schemas import RunResult


@dataclass(frozen=True)
class Services:
    """Everything the lifespan opened, once per process."""

    agent: Agent
    settings: Settings
    runs: RunManager
    keepalive_s: float
    keys: Keys
    responses: Responses
    """The stored responses of `/v1/responses`."""
    auth_required: bool
    """Whether requests need an API key (`AGENTGRAPH_AUTH`)."""
    queue: procrastinate.App
    """The background runs' queue (`graphs.queue`), to enqueue and cancel on."""
    feed: RunFeed
    """Wakes the streams of background runs when their logs grow."""

    @property
    def graph(self) -> AgentGraph:
        """The compiled graph."""
        return self.agent.graph


async def services(request: Request) -> Services:
    """Return the services the lifespan put on the app."""
    found: Services = request.app.state.services
    return found


async def result_of(svc: Services, handle: RunHandle) -> RunResult:
    """Wait for a run to end and describe its thread: the final result or the interrupt."""
    await handle.done.wait()
    final = handle.final
    if final is not None and handle.plan is not None and handle.error is None:
        # The run made its plan and reached its end: its events hold what the thread shows.
        return RunResult(
            thread_id=handle.thread_id,
            run_id=handle.run_id,
            status=final["status"],
            answer=final["answer"],
            citations=[dict(c) for c in final["citations"]],
            plan=handle.plan,
            report=dict(final["report"]),
        )
    view = await view_thread(svc.graph, handle.thread_id)
    status = view["status"]
    if handle.error and status not in ("done", "rejected", "interrupted"):
        status = "failed"
    return RunResult(
        thread_id=handle.thread_id,
        run_id=handle.run_id,
        status=status,
        answer=view["answer"],
        citations=[dict(c) for c in view["citations"]],
        plan=dict(view["plan"]) if view["plan"] else None,
        pending_approval=view["pending_approval"],
        report=dict(view["report"]) if view["report"] else None,
        error=handle.error,
    )
