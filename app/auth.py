"""API keys, tenants and thread ownership, kept in Postgres.

A key is `agk_<id>_<secret>`: the id finds its row, and only the SHA-256 of the whole key is
stored (a key is 32 random bytes: a slow hash would add nothing but time), so the secret is
shown once, when the key is made, and never again. A key belongs to a tenant and carries
scopes: `runs` (start, read and continue runs), `approvals` (answer an approval) and `admin`
(see every tenant's threads, and threads stored before ownership was recorded).

Every thread a tenant's key starts is recorded as that tenant's (`agentgraph_thread_owners`);
another tenant is told the thread does not exist. The server enforces it (`server/auth.py`).
"""

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import astuple, dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from psycopg_pool import AsyncConnectionPool

from app.errors import AuthError, ConfigError
from app.pg import create_schema

if TYPE_CHECKING:
    from app.rates import RedisRates

Scope = Literal["runs", "approvals", "admin"]
SCOPES: tuple[Scope, ...] = ("runs", "approvals", "admin")
_KEY = re.compile(r"^agk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEY_RUNS = 1000
"""The most concurrent runs a key may be given (each is an advisory lock slot)."""
CACHE_S = 5.0
"""How long a verified key is trusted without asking Postgres again (a revocation takes at
most this long to reach every server)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agentgraph_api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    scopes text[] NOT NULL,
    hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS agentgraph_thread_owners (
    thread_id text PRIMARY KEY,
    tenant text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS agentgraph_thread_owners_tenant ON agentgraph_thread_owners (tenant);
ALTER TABLE agentgraph_api_keys ADD COLUMN IF NOT EXISTS rate_per_minute integer;
ALTER TABLE agentgraph_api_keys ADD COLUMN IF NOT EXISTS concurrent_runs integer;
ALTER TABLE agentgraph_api_keys ADD COLUMN IF NOT EXISTS daily_tokens bigint;
ALTER TABLE agentgraph_api_keys ADD COLUMN IF NOT EXISTS daily_cost double precision;
CREATE TABLE IF NOT EXISTS agentgraph_key_usage (
    key_id text NOT NULL,
    day date NOT NULL,
    tokens bigint NOT NULL DEFAULT 0,
    cost double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
CREATE UNLOGGED TABLE IF NOT EXISTS agentgraph_key_rate (
    key_id text PRIMARY KEY,
    tat timestamptz NOT NULL
);
"""
_TAKE = """
INSERT INTO agentgraph_key_rate AS r (key_id, tat) VALUES (%(key)s, now() + %(interval)s)
ON CONFLICT (key_id) DO UPDATE SET tat = greatest(r.tat, now()) + %(interval)s
WHERE greatest(r.tat, now()) + %(interval)s - now() <= %(window)s
RETURNING tat
"""
_WAIT = """
SELECT extract(epoch FROM greatest(tat, now()) + %(interval)s - now() - %(window)s) AS wait_s
FROM agentgraph_key_rate WHERE key_id = %(key)s
"""


@dataclass(frozen=True)
class KeyLimits:
    """What a key may do per minute, at once and per day (None: no limit); each is a column
    of the key's row of the same name."""

    rate_per_minute: int | None = None
    """Requests the key may make per minute."""
    concurrent_runs: int | None = None
    """Runs of the key that may be in flight at once, on all servers."""
    daily_tokens: int | None = None
    """Tokens the key's runs may spend per day, UTC."""
    daily_cost: float | None = None
    """What the key's runs may cost per day, UTC, in the price table's currency."""

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> "KeyLimits":
        """The limits of a key's row."""
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def check(self) -> None:
        """Raises:
        ConfigError: a limit below its least value.
        """
        if self.rate_per_minute is not None and self.rate_per_minute < 1:
            raise ConfigError("a key's rate must be at least 1 request per minute")
        if self.concurrent_runs is not None and not 1 <= self.concurrent_runs <= MAX_KEY_RUNS:
            raise ConfigError(f"a key's concurrent runs must be 1 to {MAX_KEY_RUNS}")
        if self.daily_tokens is not None and self.daily_tokens < 1:
            raise ConfigError("a key's daily token budget must be at least 1")
        if self.daily_cost is not None and not self.daily_cost > 0:
            raise ConfigError("a key's daily cost budget must be above 0")

    def described(self) -> list[str]:
        """Each limit that is set, in words."""
        said = (
            (self.rate_per_minute, "{} requests a minute"),
            (self.concurrent_runs, "{} runs at once"),
            (self.daily_tokens, "{} tokens a day"),
            (self.daily_cost, "{:g} a day"),
        )
        return [form.format(value) for value, form in said if value is not None]


_LIMIT_COLUMNS = tuple(f.name for f in fields(KeyLimits))


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    tenant: str
    scopes: frozenset[str]
    key_id: str | None = None
    """None when authentication is off: the local operator, who may do everything."""
    limits: KeyLimits = KeyLimits()

    @property
    def has_budget(self) -> bool:
        """Whether the key's runs are held to a daily budget."""
        return self.key_id is not None and (
            self.limits.daily_tokens is not None or self.limits.daily_cost is not None
        )

    @property
    def label(self) -> str:
        """How approvals record the principal: `tenant/key id`, or `local`."""
        return f"{self.tenant}/{self.key_id}" if self.key_id else self.tenant

    @property
    def sees_everything(self) -> bool:
        """The local operator (no authentication) and admin keys see every thread."""
        return self.key_id is None or "admin" in self.scopes

    @property
    def tenant_filter(self) -> str | None:
        """The tenant a listing is limited to: the principal's, or None for one that sees
        everything."""
        return None if self.sees_everything else self.tenant


LOCAL = Principal(tenant="local", scopes=frozenset(SCOPES))
"""The principal of every request when authentication is off."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never its secret."""

    id: str
    tenant: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    limits: KeyLimits = KeyLimits()


@dataclass(frozen=True)
class Spent:
    """What a key's runs spent today (UTC)."""

    tokens: int = 0
    cost: float = 0.0


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> list[Scope]:
    """Read a comma-separated scope list.

    Raises:
        ConfigError: a scope is unknown, or none is given.
    """
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ConfigError(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}: use some of "
            f"{', '.join(SCOPES)}"
        )
    return [s for s in SCOPES if s in scopes]


@dataclass
class Keys:
    """API keys and thread owners on a pool (autocommit, dict rows)."""

    pool: AsyncConnectionPool[Any]
    rates: "RedisRates | None" = None
    """Where request rates are counted when not in Postgres (`AGENTGRAPH_REDIS_URL`)."""
    _verified: dict[str, tuple[float, Principal]] = field(default_factory=dict)

    async def setup(self) -> None:
        """Create the tables if they are missing, one process at a time."""
        await create_schema(self.pool, _SCHEMA)

    async def create(
        self,
        tenant: str,
        scopes: list[Scope],
        *,
        expires_at: datetime | None = None,
        limits: KeyLimits = KeyLimits(),
    ) -> tuple[KeyInfo, str]:
        """Make a key; return it as listed and its secret, which is not stored.

        Raises:
            ConfigError: a bad tenant name, no scope, or a rate below 1.
        """
        limits.check()
        if not _TENANT.match(tenant):
            raise ConfigError(
                f"bad tenant name {tenant!r}: 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not scopes:
            raise ConfigError("a key needs at least one scope")
        key_id = secrets.token_hex(8)
        secret = f"agk_{key_id}_{secrets.token_urlsafe(32)}"
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO agentgraph_api_keys (id, tenant, scopes, hash, expires_at,"
                f" {', '.join(_LIMIT_COLUMNS)})"
                f" VALUES (%s, %s, %s, %s, %s, {', '.join('%s' for _ in _LIMIT_COLUMNS)})"
                " RETURNING *",
                (key_id, tenant, list(scopes), _digest(secret), expires_at, *astuple(limits)),
            )
            row = await cursor.fetchone()
        assert row is not None
        return _info(row), secret

    async def listed(self) -> list[KeyInfo]:
        """Every key, newest first."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM agentgraph_api_keys ORDER BY created_at DESC, id"
            )
            return [_info(r) for r in await cursor.fetchall()]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when no such key is live."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE agentgraph_api_keys SET revoked_at = now()"
                " WHERE id = %s AND revoked_at IS NULL RETURNING id",
                (key_id,),
            )
            return await cursor.fetchone() is not None

    async def authenticate(self, presented: str | None) -> Principal:
        """The principal of a presented key.

        Raises:
            AuthError: no key, or one that is malformed, unknown, revoked or expired.
        """
        if not presented:
            raise AuthError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        now = time.monotonic()
        cached = self._verified.get(presented)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        match = _KEY.match(presented)
        if match is None:
            raise AuthError("malformed API key: keys look like agk_<16 hex>_<secret>")
        row = await self._row(match.group(1))
        if row is None or not hmac.compare_digest(row["hash"], _digest(presented)):
            raise AuthError("unknown API key")
        principal = _current(row)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[presented] = (now, principal)
        return principal

    async def principal(self, key_id: str) -> Principal:
        """The principal of a key by its id, as it stands now: for work a key asked for
        earlier (a queued run, a cron's firing), checked again when it starts.

        Raises:
            AuthError: the key was deleted, revoked or has expired.
        """
        row = await self._row(key_id)
        if row is None:
            raise AuthError(f"API key {key_id} no longer exists")
        return _current(row)

    async def _row(self, key_id: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT *, expires_at IS NOT NULL AND expires_at <= now() AS expired"
                " FROM agentgraph_api_keys WHERE id = %s",
                (key_id,),
            )
            row: dict[str, Any] | None = await cursor.fetchone()
        return row

    async def claim(self, thread_id: str, principal: Principal) -> bool:
        """Record a thread as the principal's tenant's if nobody owns it; return whether the
        tenant owns it now (False: another tenant does)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO agentgraph_thread_owners (thread_id, tenant) VALUES (%s, %s)"
                " ON CONFLICT (thread_id) DO NOTHING",
                (thread_id, principal.tenant),
            )
            cursor = await conn.execute(
                "SELECT tenant FROM agentgraph_thread_owners WHERE thread_id = %s", (thread_id,)
            )
            row = await cursor.fetchone()
        return bool(row and row["tenant"] == principal.tenant) or principal.sees_everything

    async def take_request(self, principal: Principal) -> float | None:
        """Count one request against the key's rate; return None when it may go ahead, or
        the seconds to wait before the next one may.

        The limit is a token bucket kept in Postgres, or in Redis with `rates` (the generic
        cell rate algorithm: one timestamp per key), so it holds across every server on the
        database: a key may send up to its rate at once, then one request each 60/rate
        seconds.
        """
        rate = principal.limits.rate_per_minute
        if principal.key_id is None or not rate:
            return None
        if self.rates is not None:
            return await self.rates.take(principal.key_id, rate)
        values = {
            "key": principal.key_id,
            "interval": timedelta(seconds=60 / rate),
            "window": timedelta(seconds=60),
        }
        async with self.pool.connection() as conn:
            cursor = await conn.execute(_TAKE, values)
            if await cursor.fetchone() is not None:
                return None
            cursor = await conn.execute(_WAIT, values)
            row = await cursor.fetchone()
        return max(float(row["wait_s"]) if row else 0.0, 0.0)

    async def spent_today(self, key_id: str) -> Spent:
        """What the key's runs spent today (UTC), on every server."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT tokens, cost FROM agentgraph_key_usage"
                " WHERE key_id = %s AND day = (now() AT TIME ZONE 'UTC')::date",
                (key_id,),
            )
            row = await cursor.fetchone()
        return Spent(int(row["tokens"]), float(row["cost"])) if row else Spent()

    async def charge(self, key_id: str, tokens: int, cost: float) -> None:
        """Add what a run of the key spent to today's (UTC) account."""
        if tokens <= 0 and cost <= 0:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO agentgraph_key_usage AS u (key_id, day, tokens, cost)"
                " VALUES (%s, (now() AT TIME ZONE 'UTC')::date, %s, %s)"
                " ON CONFLICT (key_id, day)"
                " DO UPDATE SET tokens = u.tokens + excluded.tokens, cost = u.cost + excluded.cost",
                (key_id, tokens, cost),
            )

    async def forget(self, thread_id: str) -> None:
        """Drop the record of who owns a thread (it was deleted)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM agentgraph_thread_owners WHERE thread_id = %s", (thread_id,)
            )

    async def may_see(self, thread_id: str, principal: Principal) -> bool:
        """Whether the principal may see the thread: its tenant's, or it sees everything."""
        if principal.sees_everything:
            return True
        return bool(await self.visible([thread_id], principal))

    async def visible(self, thread_ids: list[str], principal: Principal) -> set[str]:
        """Which of the threads the principal may see."""
        if principal.sees_everything:
            return set(thread_ids)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT thread_id FROM agentgraph_thread_owners"
                " WHERE tenant = %s AND thread_id = ANY(%s)",
                (principal.tenant, thread_ids),
            )
            return {r["thread_id"] for r in await cursor.fetchall()}


def _info(row: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        tenant=row["tenant"],
        scopes=list(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        limits=KeyLimits.of_row(row),
    )


def _current(row: dict[str, Any]) -> Principal:
    """The principal of a key's row (with its `expired` flag).

    Raises:
        AuthError: the key was revoked or has expired.
    """
    if row["revoked_at"] is not None:
        raise AuthError("this API key was revoked")
    if row["expired"]:
        raise AuthError("this API key has expired")
    return Principal(
        tenant=row["tenant"],
        scopes=frozenset(row["scopes"]),
        key_id=row["id"],
        limits=KeyLimits.of_row(row),
    )


async def sleep_on_failure() -> None:
    """A short pause after a failed authentication, so guessing keys is slow."""
    await asyncio.sleep(0.05)
