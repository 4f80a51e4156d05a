"""Scheduled runs: a cron expression and a question, fired as background runs by the workers.

Each cron is a row of `agentgraph_crons` with the time it next fires. Every queue worker looks
for due crons each `TICK_S` (`fire_periodically`); a due cron is locked (`FOR UPDATE SKIP
LOCKED`), queued as a run (`graphs.queue.enqueue`) and moved to its next time in one
transaction, so each firing is exactly one run however many workers look. A firing runs on a
new thread, or on the cron's own thread when it has one. Firings missed while no worker ran
are not made up: the next one is the first time after now. A firing of a cron that an API key
made is a run of that key: the worker that takes it checks the key as it stands then (a
revoked or expired key's firing fails, saying so) and holds it to the key's daily budget.
"""

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import procrastinate
from croniter import CroniterBadCronError, croniter
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.errors import ConfigError
from graphs.driver import RunOrder
from graphs.queue import enqueue, new_run_id
from graphs.runs import new_thread_id

logger = logging.getLogger(__name__)

TICK_S = 1.0
"""How often a worker looks for due crons."""
_COLUMNS = (
    "cron_id, schedule, question, thread_id, options, started_by, tenant, keyed, key_id, "
    "next_run_at, last_run_id, created_at"
)


def next_firing(schedule: str, after: datetime) -> datetime:
    """The first time after `after` that `schedule` fires.

    Raises:
        ConfigError: not a cron expression (5 fields, or 6 with seconds last).
    """
    try:
        found: datetime = croniter(schedule, after).get_next(datetime)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"bad schedule {schedule!r}: {exc}; give a cron expression such as '0 9 * * 1-5' "
            "(minute hour day month weekday), with an optional sixth field for seconds"
        ) from None
    return found


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A cron as the API shows it."""
    return {
        "cron_id": row["cron_id"],
        "schedule": row["schedule"],
        "question": row["question"],
        "thread_id": row["thread_id"],
        "options": row["options"],
        "started_by": row["started_by"],
        "next_run_at": row["next_run_at"].isoformat(),
        "last_run_id": row["last_run_id"],
        "created_at": row["created_at"].isoformat(),
    }


async def create_cron(
    pool: AsyncConnectionPool[Any],
    *,
    schedule: str,
    question: str,
    thread_id: str | None,
    options: dict[str, Any],
    started_by: str,
    tenant: str,
    key_id: str | None,
) -> dict[str, Any]:
    """Store a cron; return it as the API shows it. `key_id`: the API key that made it, if
    any: the threads of its firings are recorded as its tenant's, and each firing is a run of
    that key (checked when a worker starts it, and held to the key's daily budget).

    Raises:
        ConfigError: a bad schedule.
    """
    first = next_firing(schedule, datetime.now(UTC))
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO agentgraph_crons (cron_id, schedule, question, thread_id, options,"
            " started_by, tenant, keyed, key_id, next_run_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (
                uuid.uuid4().hex,
                schedule,
                question,
                thread_id,
                Jsonb(options),
                started_by,
                tenant,
                key_id is not None,
                key_id,
                first,
            ),
        )
        row = await cursor.fetchone()
    assert row is not None
    return public(row)


async def list_crons(pool: AsyncConnectionPool[Any], *, tenant: str | None) -> list[dict[str, Any]]:
    """Every cron (of one tenant, when given), the soonest to fire first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM agentgraph_crons"
            " WHERE %(tenant)s::text IS NULL OR tenant = %(tenant)s ORDER BY next_run_at",
            {"tenant": tenant},
        )
        return [public(row) for row in await cursor.fetchall()]


async def delete_cron(pool: AsyncConnectionPool[Any], cron_id: str, *, tenant: str | None) -> bool:
    """Delete a cron (of the tenant, when given); return whether there was one."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "DELETE FROM agentgraph_crons WHERE cron_id = %s AND (%s::text IS NULL OR tenant = %s)",
            (cron_id, tenant, tenant),
        )
        deleted: bool = cursor.rowcount == 1
    return deleted


async def fire_due(app: procrastinate.App, pool: AsyncConnectionPool[Any]) -> list[str]:
    """Queue a run for every due cron and move each to its next time; return the run ids."""
    fired: list[str] = []
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM agentgraph_crons WHERE next_run_at <= now()"
            " ORDER BY next_run_at LIMIT 100 FOR UPDATE SKIP LOCKED"
        )
        now = datetime.now(UTC)
        for row in await cursor.fetchall():
            thread_id = row["thread_id"] or new_thread_id()
            run_id = new_run_id()
            order = RunOrder(
                thread_id=thread_id,
                request=row["question"],
                options=row["options"],
                new_thread=row["thread_id"] is None,
            )
            await enqueue(
                app,
                conn,
                order,
                run_id=run_id,
                started_by=row["started_by"],
                tenant=row["tenant"],
                cron_id=row["cron_id"],
                charge_key=row["key_id"],
            )
            await conn.execute(
                "UPDATE agentgraph_crons SET next_run_at = %s, last_run_id = %s WHERE cron_id = %s",
                (next_firing(row["schedule"], now), run_id, row["cron_id"]),
            )
            if row["keyed"] and row["thread_id"] is None:
                await conn.execute(
                    "INSERT INTO agentgraph_thread_owners (thread_id, tenant) VALUES (%s, %s)"
                    " ON CONFLICT (thread_id) DO NOTHING",
                    (thread_id, row["tenant"]),
                )
            fired.append(run_id)
    return fired


async def fire_periodically(app: procrastinate.App, pool: AsyncConnectionPool[Any]) -> None:
    """Fire due crons every `TICK_S`, until cancelled."""
    while True:
        try:
            for run_id in await fire_due(app, pool):
                logger.info("cron fired run %s", run_id)
        except Exception:
            logger.exception("could not fire the due crons; trying again")
        await asyncio.sleep(TICK_S)
