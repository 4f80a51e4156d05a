"""A queue worker: executes background runs (`graphs.queue`) and fires crons (`graphs.crons`).

`agentgraph worker` runs one in its own process; `agentgraph serve` runs one in each server
process too, unless `AGENTGRAPH_SERVE_WORKER=false`. Beside procrastinate's own worker it
runs four loops: the stop requests of other runs (`graphs.multitask`), the look for runs of
workers that died (`retry_stalled`), the due crons, and the approval deadlines
(`graphs.deadlines`).
"""

import asyncio
import contextlib
import logging

import procrastinate
from procrastinate.exceptions import ConnectorException

from app.pg import open_pool
from app.settings import Settings
from graphs import deadlines
from graphs.crons import fire_periodically
from graphs.multitask import listen_for_stops
from graphs.queue import QUEUE, TASK, Executor, open_queue, register, worker_name
from graphs.service import Agent

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
"""How long a stopping worker lets its runs go on before it cuts them off for a retry."""


async def retry_stalled(app: procrastinate.App, *, stalled_s: float, every_s: float) -> None:
    """Every `every_s`, take again the runs of workers whose heartbeat is `stalled_s` old."""
    manager = app.job_manager
    while True:
        try:
            for job in await manager.get_stalled_jobs(
                task_name=TASK, seconds_since_heartbeat=stalled_s
            ):
                logger.warning("run job %s lost its worker: retrying it", job.id)
                with contextlib.suppress(ConnectorException):  # another worker was first
                    await manager.retry_job(job)
        except ConnectorException as exc:
            logger.warning("could not look for stalled runs: %s", exc)
        await asyncio.sleep(every_s)


async def run_worker(
    agent: Agent,
    settings: Settings,
    *,
    install_signal_handlers: bool,
    watch_deadlines: bool = True,
) -> None:
    """Execute background runs until cancelled (or, with `install_signal_handlers`, until
    SIGINT or SIGTERM): `settings.worker_concurrency` at once; with `watch_deadlines`, also
    enforce approval deadlines (a server watches them itself)."""
    lock_pool = await open_pool(
        agent.db.url,
        max_size=settings.worker_concurrency + 1,
        prepared=settings.db_prepared_statements,
    )
    executor = Executor(agent, settings, lock_pool)
    try:
        async with open_queue(agent.db.url, agent.db.pool) as app:
            register(app, executor)
            async with contextlib.AsyncExitStack() as side:
                jobs = [
                    listen_for_stops(agent.db.url, executor.on_stop),
                    retry_stalled(
                        app,
                        stalled_s=settings.worker_stalled_s,
                        every_s=settings.worker_heartbeat_s,
                    ),
                    fire_periodically(app, agent.db.pool),
                ]
                if watch_deadlines:
                    watch = deadlines.DeadlineWatch(
                        agent.graph, agent.db.pool, executor.locks, settings, agent.toolbox.roster()
                    )
                    jobs.append(deadlines.watch_deadlines(watch))
                for job in jobs:
                    task = asyncio.create_task(job)
                    side.callback(task.cancel)
                await app.run_worker_async(
                    queues=[QUEUE],
                    name=worker_name(),
                    concurrency=settings.worker_concurrency,
                    shutdown_graceful_timeout=SHUTDOWN_GRACE_S,
                    install_signal_handlers=install_signal_handlers,
                    update_heartbeat_interval=settings.worker_heartbeat_s,
                    stalled_worker_timeout=settings.worker_stalled_s,
                    delete_jobs="successful",
                )
    finally:
        await lock_pool.close()
