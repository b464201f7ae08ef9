"""One gateway quota shared by every instance of an app key (a `Limiter`), kept in Redis; local share without it.

    acquire(n) ─► tokens in hand? ─yes─► go
                      │ no
                      ▼
                lease(k) in Redis (GCRA, one round trip for k = min(lease, local demand) tokens)
                      │ granted, usable after `wait`     │ ban left          │ Redis gone
                      ▼                                  ▼                   ▼
                 sleep, then go                   sleep out the ban     degraded: local GCRA at
                                                                         per_second / instances
Leased tokens are a slice of the shared schedule: they may be used from their slot on and expire 20 ms
after it, so an instance never holds more than one lease, a dead one takes at most `lease` tokens with it,
and one that was held up (CPU, GC) leases again rather than sending late on top of everybody else's slots.

A gateway ban (`ban()`, a code 7) is written to Redis, which moves the schedule past it and publishes it;
every instance honours it at once (pub/sub), on its next lease, or at its next heartbeat (a one-second poll),
whichever comes first. Heartbeats also count the live instances, the divisor of the local share when Redis is
unreachable; they keep trying Redis, and the first one that succeeds returns this instance to the shared
budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from bridge.errors import QuotaStoreError
from bridge.flow.limiter import Clock, GcraLimiter, Sleep
from bridge.flow.quota_store import Beat, Lease
from bridge.metrics import Metrics

log = logging.getLogger("bridge.quota")

# Leased tokens may be used this long after their slot, no later: an instance that was held up (CPU, GC) drops
# them and leases again instead of sending a late crowd on top of everybody else's slots.
TOKEN_GRACE_SECONDS = 0.02
BEAT_SECONDS = 1.0  # heartbeat (live count, ban poll, reconnect attempt) interval
MEMBER_TTL_SECONDS = 5.0  # an instance silent this long no longer counts as live
SUBSCRIBE_WAIT_SECONDS = 1.0  # start() waits this long at most for the ban channel's subscription
PUBLISH_SLACK = 0.05  # a ban that extends the one already shared by less than this is not published again


class QuotaStore(Protocol):
    """What the shared quota needs of its store (`bridge.flow.quota_store.RedisQuotaStore`)."""

    async def start(self) -> None:
        """Connect and load the script."""
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...

    async def lease(self, want: int, rate: float, burst: int) -> Lease:
        """Take `want` tokens of the shared schedule."""
        ...

    async def ban(self, seconds: float, member: str) -> float:
        """Start or extend the shared ban; return the ban left."""
        ...

    async def beat(self, member: str, ttl: float) -> Beat:
        """Heartbeat of a live instance."""
        ...

    async def leave(self, member: str) -> None:
        """Leave the live instances."""
        ...

    def ban_notices(self, on_subscribed: Callable[[], None]) -> AsyncIterator[tuple[float, str]]:
        """(ban seconds, member that started it) as published; `on_subscribed()` once listening."""
        ...


class SharedQuota:
    """The `Limiter` of an instance that shares its app's quota through Redis (see the module docstring)."""

    def __init__(
        self,
        store: QuotaStore,
        *,
        rate: float,
        burst: int,
        lease: int,
        member: str,
        metrics: Metrics,
        expected_instances: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        beat_seconds: float = BEAT_SECONDS,
    ) -> None:
        self._store = store
        self.rate = rate
        self.burst = max(1, burst)
        self.lease = max(1, lease)
        self.member = member
        self._m = metrics
        self._expected = expected_instances
        self._clock = clock
        self._sleep = sleep
        self._beat_seconds = beat_seconds
        self._lock = asyncio.Lock()
        self._demand = 0  # tokens wanted by callers inside acquire(): the size of the next lease
        self._tokens = 0
        self._usable_at = 0.0
        self._expires_at = 0.0
        self._ban_until = 0.0
        self._shared_until = 0.0  # end of the last ban this instance published or heard of
        self._local: GcraLimiter | None = None  # set while degraded
        self._divisor = 1
        self.instances = 0  # live instances last seen in Redis (0 = never seen)
        self.bans = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self._started = False
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect (a Redis that is down only starts this instance degraded), then heartbeat and listen."""
        if self._started:
            return
        self._started = True
        self._m.prime_quota()
        self._m.quota_degraded.set(0)
        try:
            await self._store.start()
        except QuotaStoreError as exc:
            self._degrade(exc)
        else:
            await self._beat_once()
        self._spawn(self._beat_loop())
        self._spawn(self._listen_loop())
        if not self.degraded:  # a ban published from now on reaches this instance at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)

    async def stop(self) -> None:
        """Stop heartbeats and the subscription, leave the live instances, close the connections (idempotent)."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not self.degraded:
            with contextlib.suppress(QuotaStoreError):  # else it drops out after MEMBER_TTL_SECONDS anyway
                await self._store.leave(self.member)
        await self._store.close()

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the local share applies."""
        return self._local is not None

    # ----------------------------------------------------------------- Limiter
    def set_rate(self, rate: float, burst: int) -> None:
        """Change the rate and burst this instance leases at (and its local share while degraded)."""
        self.rate = rate
        self.burst = max(1, burst)
        if self._local is not None:
            self._local.set_rate(*self._share(self._divisor))

    def ban(self, seconds: float, now: float | None = None) -> float:
        """Close the gate here at once and for every instance through Redis; return when it opens (monotonic)."""
        now = self._clock() if now is None else now
        until = now + max(0.0, seconds)
        if until > self._ban_until:
            self._ban_until = until
            self.bans += 1
            self._drop_tokens()  # their slots lie before the ban's end: the schedule moved past them
            if self._local is not None:
                self._local.ban(seconds, now)
            elif until > self._shared_until + PUBLISH_SLACK:
                self._shared_until = until
                self._spawn(self._share_ban(seconds))
        return self._ban_until

    def banned_for(self, now: float | None = None) -> float:
        """Seconds left of the current cool-down, shared or local (0 when none)."""
        now = self._clock() if now is None else now
        return max(0.0, self._ban_until - now)

    async def acquire(self, n: int = 1) -> float:
        """Wait for `n` tokens (and for any ban to end); return the seconds waited.

        Callers queue on a FIFO lock; the head one leases for everybody waiting (`_demand`, at most `lease`
        tokens, or `n` for a larger batch), so Redis sees about rate / lease round trips per second.
        """
        n = max(1, n)
        start = self._clock()
        if self.rate <= 0 and start >= self._ban_until:
            return 0.0
        self._demand += n
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    if self._ban_until > now:
                        await self._sleep(self._ban_until - now)
                        continue
                    if self.rate <= 0:
                        return now - start
                    if self._local is not None:
                        await self._local.acquire(n)
                        if self._ban_until > self._clock():
                            continue
                        return self._clock() - start
                    if self._tokens:
                        if now > self._expires_at:
                            self._drop_tokens()
                        elif now < self._usable_at:
                            await self._sleep(self._usable_at - now)
                            continue
                        elif self._tokens >= n:
                            self._tokens -= n
                            return now - start
                    await self._take_lease(n)
        finally:
            self._demand -= n

    # ----------------------------------------------------------------- internals
    async def _take_lease(self, n: int) -> None:
        held = self._tokens
        want = max(n, min(self.lease, self._demand)) - held
        try:
            lease = await self._store.lease(want, self.rate, self.burst)
        except QuotaStoreError as exc:
            self._degrade(exc)
            return
        now = self._clock()
        if lease.ban_left > 0:
            self._learn_ban(lease.ban_left, now)
            return
        self._m.quota_leases.inc()
        self._m.quota_leased_tokens.inc(lease.granted)
        self._tokens = held + lease.granted
        self._usable_at = now + lease.wait
        self._expires_at = self._usable_at + TOKEN_GRACE_SECONDS

    def _drop_tokens(self) -> None:
        if self._tokens:
            self._m.quota_expired_tokens.inc(self._tokens)
            self._tokens = 0

    def _learn_ban(self, seconds: float, now: float | None = None) -> bool:
        """A ban known to Redis (another instance's, or ours echoed): honour it here; True if it was news."""
        now = self._clock() if now is None else now
        until = now + seconds
        self._shared_until = max(self._shared_until, until)
        if until <= self._ban_until + PUBLISH_SLACK:
            return False
        self._ban_until = until
        self._drop_tokens()
        return True

    async def _share_ban(self, seconds: float) -> None:
        try:
            await self._store.ban(seconds, self.member)
        except QuotaStoreError as exc:
            self._degrade(exc)

    def _share(self, divisor: int) -> tuple[float, int]:
        return (self.rate / divisor if self.rate > 0 else 0.0), max(1, self.burst // divisor)

    def _degrade(self, exc: QuotaStoreError) -> None:
        if self._local is not None or self._stopped:
            return
        if self._expected is not None:
            divisor, source = self._expected, "expected_instances"
        elif self.instances > 0:
            divisor, source = self.instances, "live instances last seen in Redis"
        else:
            divisor, source = 1, "none known (set delivery.rate_limit.shared.expected_instances)"
        self._divisor = divisor
        rate, burst = self._share(divisor)
        local = GcraLimiter(rate, burst, clock=self._clock, sleep=self._sleep)
        left = self.banned_for()
        if left > 0:
            local.ban(left)
        self._drop_tokens()
        self._local = local
        self._m.quota_degraded.set(1)
        log.warning(
            "shared quota: Redis unreachable, using this instance's share of the quota until it is back",
            extra={
                "ctx": {
                    "op": exc.op,
                    "error": exc.cause,
                    "local_per_second": round(rate, 3),
                    "instances_assumed": divisor,
                    "instances_from": source,
                }
            },
        )

    def _recover(self) -> None:
        self._local = None
        self._m.quota_degraded.set(0)
        log.info("shared quota: Redis is back, using the shared quota again", extra={"ctx": {"member": self.member}})
        left = self.banned_for()
        if left > 0:  # a ban this instance honoured alone while Redis was gone: share what is left of it
            self._shared_until = self._ban_until
            self._spawn(self._share_ban(left))

    async def _beat_once(self) -> None:
        try:
            beat = await self._store.beat(self.member, MEMBER_TTL_SECONDS)
        except QuotaStoreError as exc:
            self._degrade(exc)
            return
        self.instances = beat.instances
        self._m.quota_instances.set(beat.instances)
        if beat.ban_left > 0:
            self._learn_ban(beat.ban_left)
        if self._local is not None:
            self._recover()

    async def _beat_loop(self) -> None:
        while True:
            await self._sleep(self._beat_seconds)
            await self._beat_once()

    async def _listen_loop(self) -> None:
        while True:
            try:
                async for seconds, member in self._store.ban_notices(self._subscribed.set):
                    if member != self.member and self._learn_ban(seconds):
                        self._m.quota_remote_bans.inc()
                        log.warning(
                            "gateway ban from another instance: every sender here waits",
                            extra={"ctx": {"ban_seconds": round(seconds, 3), "from": member}},
                        )
            except QuotaStoreError:
                pass  # the heartbeat notices the outage and degrades; subscribe again after a pause
            await self._sleep(self._beat_seconds)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
