"""`GET /metrics`: this process's figures in Prometheus's text format.

Like `/healthz` it needs no API key, whatever `AGENTGRAPH_AUTH` says: a scraper carries none.
It tells counts, durations, token use and cost by model, never a thread's content; keep the
port private, or filter the path at the proxy, where that is too much.
"""

import asyncio
import logging

import psycopg
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from psycopg_pool import PoolTimeout

from app.telemetry.metrics import CONTENT_TYPE, DatabaseFigures, render
from graphs.gauges import database_figures, pool_figures
from server.routes_runs import Svc

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

DATABASE_WAIT_S = 5.0
"""How long a scrape waits for the database's figures before it answers without them."""


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(svc: Svc) -> Response:
    """Runs, nodes, model tokens and cost, rate-limit rejections (this process's, since it
    started), and approvals waiting, queued jobs and database pools (read now)."""
    pools = {"main": svc.agent.db.pool, "locks": svc.runs.locks.pool}
    try:
        figures = await asyncio.wait_for(
            database_figures(svc.agent.db.pool, pools), DATABASE_WAIT_S
        )
    except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
        logger.warning("metrics without the database's figures: %s", exc)
        figures = DatabaseFigures(pools={name: pool_figures(p) for name, p in pools.items()})
    return Response(render(figures), media_type=CONTENT_TYPE)
