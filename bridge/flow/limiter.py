"""A GCRA rate limiter with a shared cool-down (the gateway's "ban for N seconds").

GCRA keeps a theoretical arrival time (TAT). A caller may go at `now` when `TAT - tau <= now`, where
`tau = (burst - 1) / rate` is how far ahead of schedule a burst may run. Each pass moves TAT by `1 / rate`.
Waiters reserve their slot up front and sleep only its remaining time, so the long-run rate is exact whatever
the timer granularity, and no more than `burst` calls ever go at once.

A cool-down (`ban(seconds)`) closes the gate for everybody until it ends; TAT is moved to the end of the ban,
so when it lifts the rate resumes from a burst of at most `burst`, not with the backlog of everyone who waited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class GcraLimiter:
    """Rate limit shared by all senders of one process. `rate <= 0` means unlimited."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._tau = (self.burst - 1) * self._interval
        self._tat = 0.0
        self._ban_until = 0.0
        self.bans = 0

    @property
    def unlimited(self) -> bool:
        """True when no rate is set."""
        return self._interval == 0.0

    def reserve(self, now: float) -> float:
        """Take the next slot; return how long to wait for it (0 when it may go now)."""
        if self._interval == 0.0:
            return max(0.0, self._ban_until - now)
        tat = max(self._tat, now)
        wait = tat - self._tau - now
        self._tat = tat + self._interval
        return wait if wait > 0 else 0.0

    def ban(self, seconds: float, now: float | None = None) -> float:
        """Close the gate for everyone for `seconds`; return when it opens (monotonic time)."""
        now = self._clock() if now is None else now
        until = now + max(0.0, seconds)
        if until > self._ban_until:
            self._ban_until = until
            self.bans += 1
        self._tat = max(self._tat, self._ban_until)
        return self._ban_until

    def banned_for(self, now: float | None = None) -> float:
        """Seconds left of the current cool-down (0 when none)."""
        now = self._clock() if now is None else now
        return max(0.0, self._ban_until - now)

    async def acquire(self) -> float:
        """Wait for a slot (and for any cool-down to end); return the seconds waited."""
        start = self._clock()
        now = start
        while True:
            left = self._ban_until - now
            if left > 0:
                await self._sleep(left)
                now = self._clock()
                continue
            wait = self.reserve(now)
            if wait > 0:
                await self._sleep(wait)
                now = self._clock()
            if now >= self._ban_until:
                return now - start
