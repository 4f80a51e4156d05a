"""Approval deadlines: a gate that waits past its `approval_timeout` takes its action.

A gate's deadline and action travel in its interrupt payload (`nodes.approval.with_deadline`),
so they are in the checkpoints and hold across restarts and replicas. Every server, and every
queue worker, watches them (`watch_deadlines`): each `TICK_S` it lists the threads that wait
(`graphs.inbox.waiting_checkpoints`), reads the payload of each new one once, and acts on
those whose deadline has passed:

- `reject` and `approve` answer the interrupt through the one run driver
  (`graphs.driver.claim_run`) with a decision by `nodes.approval.DEADLINE`, reason
  `nodes.approval.TIMED_OUT`, recorded in the approval history like any decision. The claim
  takes the thread's lock, and under it the thread must still wait at the same checkpoint:
  so two watchers, or a watcher and a person answering at the same moment, never both win;
  the loser meets the lock, or nothing left to resume, and lets it be.
- `escalate` leaves the thread waiting and flags the gate (`graphs.escalations`), once.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from psycopg_pool import AsyncConnectionPool

from app.errors import (
    AgentGraphError,
    DatabaseError,
    NothingToResumeError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from app.settings import Settings, TimeoutAction
from app.telemetry.metrics import count_approval_timeout
from graphs.agent import AgentGraph
from graphs.driver import RunOrder, claim_run
from graphs.escalations import escalate, setup_escalations
from graphs.inbox import deadline_of, waiting_checkpoints
from graphs.locks import ThreadLocks
from graphs.runs import RunEvent, thread_config
from nodes.approval import DEADLINE, TIMED_OUT
from nodes.plans import Roster

logger = logging.getLogger(__name__)

TICK_S = 1.0
"""How often a watcher looks for gates whose deadline has passed."""
_ACTIONS = get_args(TimeoutAction)


@dataclass(frozen=True)
class Terms:
    """What a waiting gate's payload says of its deadline."""

    deadline: datetime
    action: TimeoutAction
    low_risk: bool


def terms_of(payload: object) -> Terms | None:
    """The deadline terms of an interrupt payload; None when it has no deadline."""
    deadline = deadline_of(payload)
    if deadline is None or not isinstance(payload, dict):
        return None
    action = payload.get("on_timeout")
    for known in _ACTIONS:
        if action == known:
            return Terms(deadline=deadline, action=known, low_risk=bool(payload.get("low_risk")))
    return None


def escalation_reason(terms: Terms) -> str:
    """Why a deadline escalated its gate, as the inbox shows it."""
    if terms.low_risk:
        return f"{TIMED_OUT}: escalated"
    return f"{TIMED_OUT}: escalated (a gate that is not low-risk is never approved by its deadline)"


@dataclass
class DeadlineWatch:
    """One process's watch over approval deadlines (see the module's docstring)."""

    graph: AgentGraph
    pool: AsyncConnectionPool[Any]
    locks: ThreadLocks
    settings: Settings
    roster: Roster | None = None
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self._terms: dict[tuple[str, str], Terms | None] = {}
        """Each waiting checkpoint's terms, read once; None: no deadline, or handled."""
        self._answering: set[str] = set()

    async def due(self) -> list[tuple[str, str, Terms]]:
        """The gates whose deadline has passed, as (thread id, checkpoint id, terms)."""
        waiting = await waiting_checkpoints(self.pool)
        self._terms = {key: self._terms[key] for key in waiting if key in self._terms}
        for key in waiting:
            if key not in self._terms:
                self._terms[key] = await self._read(*key)
        now = self.now()
        return [
            (thread_id, checkpoint_id, terms)
            for (thread_id, checkpoint_id), terms in self._terms.items()
            if terms is not None and terms.deadline <= now
        ]

    async def _read(self, thread_id: str, checkpoint_id: str) -> Terms | None:
        snapshot = await self.graph.aget_state(thread_config(thread_id))
        if snapshot.config["configurable"].get("checkpoint_id") != checkpoint_id:
            return None  # moved on since the query: the next look sees where it is
        if not snapshot.interrupts:
            return None
        return terms_of(snapshot.interrupts[0].value)

    async def tick(self, tasks: asyncio.TaskGroup) -> None:
        """Act on every gate whose deadline has passed: escalate here, answer in `tasks`."""
        for thread_id, checkpoint_id, terms in await self.due():
            if terms.action == "escalate":
                self._terms[(thread_id, checkpoint_id)] = None
                if await escalate(self.pool, thread_id, checkpoint_id, escalation_reason(terms)):
                    count_approval_timeout("escalate")
                    logger.info("approval of thread %s passed its deadline: escalated", thread_id)
            elif thread_id not in self._answering:
                self._answering.add(thread_id)
                tasks.create_task(self._answer_guarded(thread_id, checkpoint_id, terms))

    async def _answer_guarded(self, thread_id: str, checkpoint_id: str, terms: Terms) -> None:
        try:
            await self.answer(thread_id, checkpoint_id, terms)
        except DatabaseError as exc:
            logger.warning("could not enforce the deadline of thread %s: %s", thread_id, exc)
        except AgentGraphError as exc:
            # Not a passing failure (a bad option the thread ran with): trying again each
            # tick would only fail again, until someone moves the thread on.
            self._terms[(thread_id, checkpoint_id)] = None
            logger.error("cannot enforce the deadline of thread %s: %s", thread_id, exc)
        except Exception:
            logger.exception("could not enforce the deadline of thread %s; trying again", thread_id)
        finally:
            self._answering.discard(thread_id)

    async def answer(self, thread_id: str, checkpoint_id: str, terms: Terms) -> bool:
        """Answer the gate that waits at `checkpoint_id` with its deadline's decision and run
        the thread on to its end or its next interrupt; return whether this call did it
        (False: someone else answered it, or holds the thread, first).

        Raises:
            AgentGraphError: the thread cannot be run (a bad stored option, no database).
        """
        assert terms.action != "escalate"
        decision = {"decision": terms.action, "reason": TIMED_OUT, "by": DEADLINE}
        order = RunOrder(thread_id=thread_id, decision=decision)
        try:
            async with claim_run(
                self.graph, self.locks, self.settings, order, roster=self.roster
            ) as run:
                # Under the thread's lock: only the checkpoint whose deadline passed is answered.
                snapshot = await self.graph.aget_state(thread_config(thread_id))
                if snapshot.config["configurable"].get("checkpoint_id") != checkpoint_id:
                    return False
                self._terms[(thread_id, checkpoint_id)] = None
                count_approval_timeout(terms.action)
                outcome: list[str] = []
                await run.run(lambda event: _note(outcome, event), run_id=uuid.uuid4().hex)
        except (ThreadBusyError, NothingToResumeError, ThreadNotFoundError):
            return False
        logger.info(
            "approval of thread %s passed its deadline: %s; the run ended %s",
            thread_id,
            terms.action,
            outcome[-1] if outcome else "without an outcome",
        )
        return True


def _note(outcome: list[str], event: RunEvent) -> None:
    """Keep how a run the deadline resumed ended, for the log."""
    kind = event["event"]
    if kind == "final":
        outcome.append(str(event.get("status")))
    elif kind in ("interrupt", "error"):
        outcome.append("interrupted" if kind == "interrupt" else f"failed: {event.get('message')}")


async def watch_deadlines(watch: DeadlineWatch, *, every_s: float = TICK_S) -> None:
    """Enforce approval deadlines every `every_s`, until cancelled (which cancels the runs
    the deadlines resumed: their threads keep every finished step)."""
    await setup_escalations(watch.pool)
    async with asyncio.TaskGroup() as tasks:
        while True:
            try:
                await watch.tick(tasks)
            except Exception:
                logger.exception("could not enforce approval deadlines; trying again")
            await asyncio.sleep(every_s)
