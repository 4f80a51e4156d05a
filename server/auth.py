"""Who may do what, on every route: the API key of a request, its scopes and its threads.

`caller` is a FastAPI dependency: with authentication on it reads the key from
`Authorization: Bearer <key>` or `X-API-Key` and answers 401 without a usable one; off, every
request acts as the local operator. `needs` answers 403 to a key without a scope. A thread of
another tenant answers 404, as a thread that does not exist does, so that a key learns nothing
of other tenants' threads.
"""

import math
from typing import Annotated

from fastapi import Depends, Request

from app.auth import LOCAL, Principal, Scope, sleep_on_failure
from app.errors import AuthError, ForbiddenError, RateLimitedError, ThreadNotFoundError
from app.telemetry.metrics import count_rejection
from graphs.runs import thread_config
from server.deps import Services


def presented_key(request: Request) -> str | None:
    """The API key a request carries, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


async def caller(request: Request) -> Principal:
    """The principal a request acts for (kept on `request.state.principal` too).

    Raises:
        AuthError: authentication is on and the request has no usable key.
    """
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    svc: Services = request.app.state.services
    if not svc.auth_required:
        principal = LOCAL
    else:
        try:
            principal = await svc.keys.authenticate(presented_key(request))
        except AuthError:
            await sleep_on_failure()
            raise
    wait_s = await svc.keys.take_request(principal)
    if wait_s is not None:
        count_rejection("rate")
        raise RateLimitedError(
            f"this API key may make {principal.limits.rate_per_minute} requests a minute: "
            f"retry in {max(1, math.ceil(wait_s))} s",
            retry_after_s=wait_s,
        )
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(caller)]


def needs(principal: Principal, scope: Scope) -> None:
    """Refuse a principal without `scope`.

    Raises:
        ForbiddenError: the key lacks the scope.
    """
    if scope not in principal.scopes:
        raise ForbiddenError(
            f"this API key has no '{scope}' scope (it has: {', '.join(sorted(principal.scopes))})"
        )


async def guard(svc: Services, principal: Principal, thread_id: str, scope: Scope) -> None:
    """Let the principal act on an existing thread with `scope`, or refuse.

    Raises:
        ForbiddenError: the key lacks the scope.
        ThreadNotFoundError: the thread is another tenant's (or unknown to this tenant).
    """
    needs(principal, scope)
    if not await svc.keys.may_see(thread_id, principal):
        raise ThreadNotFoundError(thread_id)


async def claim(svc: Services, principal: Principal, thread_id: str) -> None:
    """Make a thread the principal's tenant's for a new run, unless another tenant owns it.

    Raises:
        ForbiddenError: the key has no `runs` scope.
        ThreadNotFoundError: the thread is another tenant's.
    """
    needs(principal, "runs")
    if principal.key_id is None:
        return  # authentication off: threads belong to the local operator
    if await svc.keys.may_see(thread_id, principal):
        return
    # A thread stored with nobody's name on it (before keys were required) is nobody's to
    # take: only an admin key reaches it.
    if (await svc.graph.aget_state(thread_config(thread_id))).created_at is not None:
        raise ThreadNotFoundError(thread_id)
    if not await svc.keys.claim(thread_id, principal):
        raise ThreadNotFoundError(thread_id)
