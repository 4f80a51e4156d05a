"""Liveness and readiness."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.deps import Services
from server.routes_runs import Svc

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _ping(svc: Services) -> None:
    async with svc.agent.db.pool.connection() as conn:
        await conn.execute("SELECT 1")


@router.get("/readyz", responses={503: {"description": "The database is not reachable."}})
async def readyz(svc: Svc) -> JSONResponse:
    """The database answers."""
    try:
        await asyncio.wait_for(_ping(svc), 5)
    except Exception as exc:  # any failure to answer means not ready
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
    if svc.runs.stopping:
        return JSONResponse({"status": "stopping"}, status_code=503)
    return JSONResponse({"status": "ready"})
