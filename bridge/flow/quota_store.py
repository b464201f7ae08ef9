"""The shared quota's Redis edge: one Lua script (GCRA schedule, leases, shared ban, live members) via EVALSHA.

All state of one app key's quota lives in three keys under one hash tag, `{<prefix>}`:

    {p}:tat      theoretical arrival time of the GCRA schedule (seconds, text)
    {p}:ban      end of the shared gateway ban (seconds, text), expiring with it
    {p}:members  live instances (sorted set, score = last heartbeat)
and one pub/sub channel `{p}:bans` that carries "ban for N seconds" to every instance at once.

Time is the Redis server's (`TIME` inside the script), so the instances' clocks never matter; replies carry
durations relative to that `now`, which each instance adds to its own monotonic clock. Tests pass `now`
themselves (virtual time). Every call is bounded by the configured timeout; any failure is raised as
`QuotaStoreError`, and the limiter decides what to do (fall back to its local share).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bridge.errors import QuotaStoreError
from bridge.metrics import Metrics

if TYPE_CHECKING:
    from bridge.settings import RedisConnection

LUA = r"""
-- campus-bridge shared quota. KEYS: tat, ban, members. ARGV[1] op, ARGV[2] now ('' = server TIME).
-- Floats are returned as text: Redis truncates Lua numbers to integers.
local op = ARGV[1]
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function px(seconds) return math.ceil(seconds * 1000) + 1000 end
local ban_until = tonumber(redis.call('GET', KEYS[2])) or 0
local ban_left = math.max(0, ban_until - now)

if op == 'lease' then
  -- ARGV: want, rate, burst -> {granted, wait, ban_left}. GCRA with weight `want`: the tokens may go
  -- together once the last of them conforms; a lease larger than the burst waits for an empty schedule.
  if ban_left > 0 then return {0, fmt(ban_left), fmt(ban_left)} end
  local want = tonumber(ARGV[3])
  local interval = 1 / tonumber(ARGV[4])
  local burst = tonumber(ARGV[5])
  local tau = (burst - 1) * interval
  local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, now)
  local wait = math.max(0, tat + (math.min(want, burst) - 1) * interval - tau - now)
  local new_tat = tat + want * interval
  redis.call('SET', KEYS[1], fmt(new_tat), 'PX', px(new_tat - now))
  return {want, fmt(wait), '0'}
elseif op == 'ban' then
  -- ARGV: seconds, channel, member -> {ban_left}. Extends the ban (never shortens it), moves the schedule to its
  -- end (the rate resumes from one burst, not a backlog) and tells every instance.
  local new_until = now + tonumber(ARGV[3])
  if new_until > ban_until then
    redis.call('SET', KEYS[2], fmt(new_until), 'PX', px(new_until - now))
    local tat = tonumber(redis.call('GET', KEYS[1])) or 0
    if tat < new_until then redis.call('SET', KEYS[1], fmt(new_until), 'PX', px(new_until - now)) end
    redis.call('PUBLISH', ARGV[4], fmt(new_until - now) .. ' ' .. ARGV[5])
    ban_left = new_until - now
  end
  return {fmt(ban_left)}
elseif op == 'beat' then
  -- ARGV: member, ttl -> {live members, ban_left}
  local ttl = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[3], now, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl)
  redis.call('PEXPIRE', KEYS[3], px(ttl))
  return {redis.call('ZCARD', KEYS[3]), fmt(ban_left)}
elseif op == 'leave' then
  -- ARGV: member -> {live members, ban_left}
  redis.call('ZREM', KEYS[3], ARGV[3])
  return {redis.call('ZCARD', KEYS[3]), fmt(ban_left)}
end
return redis.error_reply('campus-bridge quota script: unknown op ' .. tostring(op))
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """Tokens granted by one round trip: usable `wait` seconds from now; none while a ban lasts."""

    granted: int
    wait: float
    ban_left: float


@dataclass(frozen=True, slots=True)
class Beat:
    """Answer to a heartbeat: live instances and the shared ban left (seconds)."""

    instances: int
    ban_left: float


def credentials(conn: RedisConnection) -> dict[str, Any]:
    """A configured connection's `username`, `password` (revealed) and `ssl_cafile`, as `redis_options` and the
    stores take them."""
    return {
        "username": conn.username,
        "password": conn.password.get_secret_value() if conn.password is not None else None,
        "ssl_cafile": str(conn.ssl_cafile) if conn.ssl_cafile is not None else None,
    }


def redis_options(
    url: str, timeout: float, *, username: str | None, password: str | None, ssl_cafile: str | None, name: str
) -> dict[str, Any]:
    """Connection options of the bridge's Redis clients (the shared quota's, the policy state's)."""
    options: dict[str, Any] = {
        "username": username,
        "password": password,
        "socket_connect_timeout": timeout,
        # one immediate retry on a fresh connection: after Redis restarts, every pooled connection is stale
        # and fails once; beyond that the caller falls back (degraded mode) rather than retry inside a call
        "retry": Retry(NoBackoff(), 1),
        "client_name": name,
    }
    if url.startswith("rediss://") and ssl_cafile:
        options["ssl_ca_certs"] = ssl_cafile
    return options


def _float(value: Any) -> float:
    return float(value.decode() if isinstance(value, bytes) else value)


class RedisQuotaStore:
    """Talks to Redis for one quota. No I/O before `start()`; `close()` is idempotent."""

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        timeout: float,
        metrics: Metrics,
        username: str | None = None,
        password: str | None = None,
        ssl_cafile: str | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.prefix = prefix
        tag = "{" + prefix + "}"
        self._keys = [f"{tag}:tat", f"{tag}:ban", f"{tag}:members"]
        self.channel = f"{tag}:bans"
        self._timeout = timeout
        self._m = metrics
        self._now = now
        options = redis_options(
            url, timeout, username=username, password=password, ssl_cafile=ssl_cafile, name="campus-bridge"
        )
        self._client: Redis = Redis.from_url(url, socket_timeout=timeout, **options)
        # pub/sub blocks on reads: no socket timeout there; a ping every few seconds finds a dead link
        self._sub_client: Redis = Redis.from_url(url, health_check_interval=5, **options)
        self._script = self._client.register_script(LUA)

    async def start(self) -> None:
        """Load the script (EVALSHA uses it from then on; it is loaded again if Redis lost it)."""
        await self._call("load", lambda: self._client.script_load(LUA))

    async def close(self) -> None:
        """Close both connections (idempotent)."""
        await self._client.aclose()
        await self._sub_client.aclose()

    def _stamp(self) -> str:
        return "" if self._now is None else repr(self._now())

    async def _call(self, op: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                result = await fn()
        except TimeoutError:
            self._m.quota_round_trip_failed(op)
            raise QuotaStoreError(op, f"no answer within {self._timeout * 1000:.0f} ms") from None
        except (RedisError, OSError) as exc:
            self._m.quota_round_trip_failed(op)
            raise QuotaStoreError(op, f"{type(exc).__name__}: {exc}") from exc
        self._m.quota_round_trip(op, time.perf_counter() - started)
        return result

    async def _run(self, op: str, *args: str | int) -> list[Any]:
        reply = await self._call(op, lambda: self._script(keys=self._keys, args=[op, self._stamp(), *args]))
        return list(reply)

    async def lease(self, want: int, rate: float, burst: int) -> Lease:
        """Take `want` tokens from the schedule (reserved; usable after `wait`), unless a ban lasts."""
        granted, wait, ban_left = await self._run("lease", want, repr(float(rate)), burst)
        return Lease(int(granted), _float(wait), _float(ban_left))

    async def ban(self, seconds: float, member: str) -> float:
        """Start or extend the shared ban and tell every instance (`member` started it); return the ban left."""
        (left,) = await self._run("ban", repr(float(seconds)), self.channel, member)
        return _float(left)

    async def beat(self, member: str, ttl: float) -> Beat:
        """Say this instance is alive; members silent for `ttl` seconds are dropped."""
        count, ban_left = await self._run("beat", member, repr(float(ttl)))
        return Beat(int(count), _float(ban_left))

    async def leave(self, member: str) -> None:
        """Leave the live members at once (a clean stop)."""
        await self._run("leave", member)

    async def ban_notices(self, on_subscribed: Callable[[], None]) -> AsyncIterator[tuple[float, str]]:
        """(ban seconds, member that started it) as published; QuotaStoreError when the link drops.

        `on_subscribed()` is called once the subscription is in place (a ban published later is seen).
        """
        pubsub = self._sub_client.pubsub()
        try:
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":  # the server's confirmation: from here on nothing is missed
                        on_subscribed()
                    elif msg["type"] == "message":
                        seconds, _, member = bytes(msg["data"]).decode().partition(" ")
                        yield float(seconds), member
            except (RedisError, OSError) as exc:
                raise QuotaStoreError("subscribe", f"{type(exc).__name__}: {exc}") from exc
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
