"""A GCRA rate limiter with a shared cool-down (the gateway's "ban for N seconds").

GCRA keeps a theoretical arrival time (TAT). A caller may go at `now` when `TAT - tau <= now`, where
`tau = (burst - 1) / rate` is how far ahead of schedule a burst may run. Each pass moves TAT by `1 / rate`.
Conformance is checked when a caller actually goes (not when it starts waiting), so the long-run rate is exact
whatever the timer granularity, and no more than `burst` calls ever go at once — even after the event loop
was held up.

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
        self._lock = asyncio.Lock()
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

    def _conform(self, now: float) -> float:
        """Take a slot if a call may go at `now` (return 0), else return the wait and take nothing."""
        tat = max(self._tat, now)
        wait = tat - self._tau - now
        if wait > 0:
            return wait
        self._tat = tat + self._interval
        return 0.0

    async def acquire(self) -> float:
        """Wait for a slot (and for any cool-down to end); return the seconds waited.

        Callers queue on a FIFO lock and only the head one sleeps; it takes its slot when it actually wakes.
        So a stalled event loop cannot release a crowd of pre-reserved slots at once: after any stall at most
        `burst` calls go together, and timer lateness below `tau` is absorbed without losing rate.
        """
        start = now = self._clock()
        if self._interval == 0.0 and now >= self._ban_until:
            return 0.0
        async with self._lock:
            now = self._clock()
            while True:
                left = self._ban_until - now
                if left > 0:
                    await self._sleep(left)
                    now = self._clock()
                    continue
                if self._interval == 0.0:
                    return now - start
                wait = self._conform(now)
                if wait == 0.0:
                    return now - start
                await self._sleep(wait)
                now = self._clock()
