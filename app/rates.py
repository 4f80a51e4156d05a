"""Request-rate counters in Redis, for a deployment that sets `AGENTGRAPH_REDIS_URL`: the
same token bucket that `app.auth.Keys` keeps in Postgres otherwise (the generic cell rate
algorithm, one timestamp per key), run as one Lua script on Redis's own clock, so every
server that shares the Redis shares the count."""

import math
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.errors import DatabaseError

_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local after = tat + interval
if after - now <= window then
  redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil(after - now))
  return '-1'
end
return tostring(after - now - window)
"""
"""Take one request from the key's bucket: '-1' when it may go, else the milliseconds to
wait. The stored time expires when the bucket is full again, as if never used."""
PREFIX = "agentgraph:rate:"


def redact(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class RedisRates:
    """Request rates per key in Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = aioredis.from_url(url)
        self._take = self.client.register_script(_GCRA)

    async def check(self) -> None:
        """Raises:
        DatabaseError: Redis cannot be reached.
        """
        try:
            await self.client.ping()
        except RedisError as exc:
            raise DatabaseError(f"cannot reach Redis at {redact(self.url)}: {exc}") from exc

    async def take(self, key_id: str, rate_per_minute: int) -> float | None:
        """Count one request of the key; None when it may go ahead, else the seconds to wait.

        Raises:
            DatabaseError: Redis cannot be reached.
        """
        try:
            answer = await self._take(
                keys=[PREFIX + key_id], args=[60_000 / rate_per_minute, 60_000]
            )
        except RedisError as exc:
            raise DatabaseError(f"cannot reach Redis at {redact(self.url)}: {exc}") from exc
        wait_ms = float(answer)
        return None if wait_ms < 0 else math.ceil(wait_ms) / 1000

    async def close(self) -> None:
        await self.client.aclose()
