"""The FastAPI app factory: the lifespan opens the database, the saver and the graph once."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from app.auth import Keys
from app.embeddings import get_embedder
from app.errors import AgentGraphError
from app.pg import open_pool
from app.rates import RedisRates
from app.responses import Responses
from app.settings import Settings, get_settings
from app.telemetry.tracing import install_tracing
from graphs.deadlines import DeadlineWatch, watch_deadlines
from graphs.inbox import setup_inbox
from graphs.multitask import listen_for_stops
from graphs.queue import open_queue
from graphs.retention import prune_periodically
from graphs.run_log import RunFeed
from graphs.service import Agent, open_agent
from graphs.worker import run_worker
from server.deps import Services
from server.errors import BodyLimit, install_error_handlers
from server.runner import RunManager, stopping_runs_on_exit_signals
from server.sse import KEEPALIVE_S
from server.watchdog import loop_watchdog

logger = logging.getLogger(__name__)

LOCK_POOL_SIZE = 64
"""Runs in flight per process: each holds its thread's advisory lock on its own connection."""
GC_YOUNG_THRESHOLD = 10_000
"""Net new container objects before a young-generation collection (Python's default: 700)."""


def settle_heap() -> None:
    """Take what start-up loaded out of the cycle collector's reach, and collect less often.

    A started server holds some 160,000 long-lived objects (modules, models, the compiled
    graph) that every full collection would walk again; a run allocates thousands of short
    -lived ones, most freed by reference counting before any collection sees them. Frozen,
    and with a larger young generation, the collector's share of a server's CPU falls from
    about a tenth to about one percent.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _warm_documents(agent: Agent, settings: Settings) -> None:
    """Load the embedding model in the background when the database holds collections: the
    planner embeds every run's steps to match them, and the first run would wait for it."""
    try:
        if await agent.library.collections():
            await asyncio.to_thread(get_embedder, settings.embeddings, settings=settings)
    except AgentGraphError as exc:
        logger.warning("embedding model not loaded ahead: %s", exc)


async def _stop_worker(working: asyncio.Task[None]) -> None:
    """Stop the in-process worker: its runs are cut off and taken again by another worker."""
    working.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await working
    if not working.cancelled() and working.exception() is not None:
        logger.error("the in-process worker had failed: %s", working.exception())


async def _stop_watch(watching: asyncio.Task[None]) -> None:
    """Stop enforcing approval deadlines; a run a deadline resumed is cut off (its thread
    keeps every finished step)."""
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching


def create_app(
    settings: Settings | None = None, *, url: str | None = None, keepalive_s: float = KEEPALIVE_S
) -> FastAPI:
    """Return the app; its lifespan opens the pool, the saver and the graph once.

    Args:
        settings: The process settings; read from the environment when unset.
        url: Connect to this Postgres instead of what the settings say.
        keepalive_s: Longest silence on an event stream before a keep-alive comment.
    """
    from server import (
        a2a,
        agent_api,
        openai_chat,
        openai_responses,
        routes_approvals,
        routes_background,
        routes_health,
        routes_metrics,
        routes_replay,
        routes_runs,
        routes_threads,
        ui,
    )
    from server.langserve_routes import add_agent_routes

    cfg = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_tracing(cfg)  # once per process: each of `serve --workers` runs this
        async with (
            open_agent(cfg, url=url) as agent,
            open_queue(agent.db.url, agent.db.pool) as queue,
        ):
            await setup_inbox(agent.db.pool)
            warming = asyncio.create_task(_warm_documents(agent, cfg))
            lock_pool = await open_pool(
                agent.db.url, max_size=LOCK_POOL_SIZE, prepared=cfg.db_prepared_statements
            )
            rates = RedisRates(cfg.redis_url) if cfg.redis_url else None
            if rates is not None:
                await rates.check()
            keys = Keys(agent.db.pool, rates)
            await keys.setup()
            responses = Responses(agent.db.pool)
            await responses.setup()
            runs = RunManager(agent, cfg, lock_pool, keys)
            feed = RunFeed()
            # "auto" is decided by `agentgraph serve` from the address it listens on; an app
            # served any other way, whose address this cannot know, asks for keys.
            app.state.services = Services(
                agent=agent,
                settings=cfg,
                runs=runs,
                keepalive_s=keepalive_s,
                keys=keys,
                responses=responses,
                auth_required=cfg.auth != "off",
                queue=queue,
                feed=feed,
            )
            tasks_engine = a2a.task_engine(agent.db.url)
            app.state.a2a = await a2a.open_dispatcher(app.state.services, tasks_engine)
            settle_heap()
            try:
                async with contextlib.AsyncExitStack() as guards:
                    guards.enter_context(stopping_runs_on_exit_signals(runs))
                    if cfg.worker_timeout_s:
                        await guards.enter_async_context(loop_watchdog(cfg.worker_timeout_s))
                    listening = asyncio.create_task(listen_for_stops(agent.db.url, runs.on_stop))
                    guards.callback(listening.cancel)
                    following = asyncio.create_task(feed.listen(agent.db.url))
                    guards.callback(following.cancel)
                    if cfg.serve_worker:
                        working = asyncio.create_task(
                            run_worker(
                                agent, cfg, install_signal_handlers=False, watch_deadlines=False
                            )
                        )
                        guards.push_async_callback(_stop_worker, working)
                    watch = DeadlineWatch(
                        agent.graph, agent.db.pool, runs.locks, cfg, agent.toolbox.roster()
                    )
                    watching = asyncio.create_task(watch_deadlines(watch))
                    guards.push_async_callback(_stop_watch, watching)
                    if cfg.checkpoint_ttl:
                        pruning = asyncio.create_task(
                            prune_periodically(agent.db.pool, cfg.checkpoint_ttl)
                        )
                        guards.callback(pruning.cancel)
                    yield
            finally:
                warming.cancel()
                await runs.stop()
                await tasks_engine.dispose()
                await lock_pool.close()
                if rates is not None:
                    await rates.close()

    app = FastAPI(
        title="agentgraph",
        version="0.1.0",
        summary="Plan-and-execute agent runs over HTTP, checkpointed to Postgres.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cfg.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location", "Content-Location"],
        )
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_runs.router)
    app.include_router(routes_threads.router)
    app.include_router(routes_replay.router)
    app.include_router(routes_approvals.router)
    app.include_router(routes_background.router)
    app.include_router(agent_api.router)
    app.include_router(openai_chat.router)
    app.include_router(a2a.router)
    app.include_router(openai_responses.router)
    app.include_router(ui.router)
    add_agent_routes(app)
    return app
