"""Daily token and cost budgets per API key, held across every server in Postgres.

Before a run starts, a key that spent its budget today (UTC) gets 429 with `Retry-After` until
midnight UTC. Otherwise the run's token budget is capped to what is left, in tokens, and to
what the money left buys at the run's model's dearer price (input or output), so the run's
own budget check stops it between steps, with the key's budget named as the reason. When the
run ends, what it spent is added to the key's day. A background run is checked and capped
when it is queued, checked and capped again by the worker that takes it (with what is left
then: runs queued together do not each spend the same remainder), and charged by that worker
after each attempt. A cron's firings are background runs of the key that made the cron.

Runs of one key that start together each see what is left at their start: together they may
spend past the budget by what they run at once; cap the key's concurrent runs to bound that.
"""

import dataclasses
import logging
import math
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import PoolTimeout

from app.accounting import price_of, tokens_used
from app.auth import Keys, Principal, Spent
from app.errors import BudgetExceededError, DatabaseError
from app.settings import Settings, get_settings
from app.telemetry.metrics import count_rejection
from graphs.agent import AgentGraph
from graphs.driver import RunOrder
from graphs.runs import thread_config
from graphs.threads import thread_context
from nodes.context import Context

logger = logging.getLogger(__name__)

KEY_BUDGET = "API key's daily budget"
"""How a run's report names a token budget that the key's daily budget set."""


def _until_midnight_s() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


async def thread_spent(graph: AgentGraph, thread_id: str, *, since: float = 0.0) -> Spent:
    """What the thread's current request spent (its usage records), in the calls that
    started at `since` (seconds since the epoch) or later."""
    state = await graph.aget_state(thread_config(thread_id))
    usage = [r for r in (state.values or {}).get("usage", []) if r["started_at"] >= since]
    return Spent(tokens_used(usage), sum(float(r["cost"]) for r in usage))


async def budgeted(
    keys: Keys, graph: AgentGraph, settings: Settings, order: RunOrder, who: Principal
) -> RunOrder:
    """Check the key's budget before a run and cap the run to what is left.

    Returns:
        The order, its token budget capped when the key's budget is the tighter.

    Raises:
        BudgetExceededError: the key spent its daily tokens or cost already.
    """
    assert who.key_id is not None
    spent = await keys.spent_today(who.key_id)
    limits = who.limits
    used_up = None
    if limits.daily_tokens is not None and spent.tokens >= limits.daily_tokens:
        used_up = f"its {limits.daily_tokens} tokens"
    elif limits.daily_cost is not None and spent.cost >= limits.daily_cost:
        used_up = f"its budget of {limits.daily_cost:g}"
    if used_up is not None:
        count_rejection("budget")
        retry = _until_midnight_s()
        raise BudgetExceededError(
            f"this API key spent {used_up} of today (UTC): retry in {math.ceil(retry)} s, "
            "after midnight UTC",
            retry_after_s=retry,
        )
    options = dict(order.options)
    if order.request is not None:
        context = Context.from_settings(settings, **options)
        before = Spent()
    else:
        context = await thread_context(graph, settings, order.thread_id, options)
        before = await thread_spent(graph, order.thread_id)
    left: list[int] = []
    if limits.daily_tokens is not None:
        left.append(limits.daily_tokens - spent.tokens)
    if limits.daily_cost is not None:
        # The process's prices, as every run's cost is reckoned (`app.accounting.cost_of`).
        price = price_of(context.model, get_settings().prices)
        per_token = max(price.input_per_mtok, price.output_per_mtok) / 1e6
        if per_token > 0:
            left.append(math.floor((limits.daily_cost - spent.cost) / per_token))
    if not left:
        return order
    # The run's budget counts its request's tokens before it too (a resume's plan).
    cap = before.tokens + max(1, min(left))
    if cap >= context.token_budget:
        return order
    capped = {**options, "token_budget": cap, "budget_label": KEY_BUDGET}
    return dataclasses.replace(order, options=capped)


async def charge(keys: Keys, graph: AgentGraph, thread_id: str, key_id: str, since: float) -> None:
    """Add what a run that started at `since` spent (its thread's usage records from then
    on) to the key's day. A run rolled back (`multitask_strategy=rollback`) left no records:
    what it spent is not charged. Call it while the run still holds the thread's lock, so
    that no later run's records are counted. A database that fails here is logged: the run
    has ended, and its answer stands."""
    try:
        spent = await thread_spent(graph, thread_id, since=since)
        await keys.charge(key_id, spent.tokens, spent.cost)
    except (psycopg.Error, PoolTimeout, DatabaseError):
        logger.exception("could not charge the run of thread %s to key %s", thread_id, key_id)
