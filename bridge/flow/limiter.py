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
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Limiter(Protocol):
    """What the delivery engine needs of a rate limiter (this module's GcraLimiter, or a shared one).

    `acquire(n)` waits until `n` messages may go (and any cool-down is over) and returns the seconds waited;
    `ban(seconds)` closes the gate for every sender (a code-7 answer); `banned_for()` says how long it stays
    closed; `set_rate(rate, burst)` changes the steady rate and burst at run time (adaptive recovery after a
    ban). `rate <= 0` means unlimited. `start()`/`stop()` open and close whatever the limiter talks to.
    """

    rate: float
    burst: int

    async def start(self) -> None:
        """Connect to whatever backs the limiter (nothing for a local one)."""
        ...

    async def stop(self) -> None:
        """Release it (idempotent)."""
        ...

    async def acquire(self, n: int = 1) -> float:
        """Wait for `n` slots; return the seconds waited."""
        ...

    def ban(self, seconds: float, now: float | None = None) -> float:
        """Close the gate for everyone for `seconds`; return when it opens (monotonic time)."""
        ...

    def banned_for(self, now: float | None = None) -> float:
        """Seconds left of the current cool-down (0 when none)."""
        ...

    def set_rate(self, rate: float, burst: int) -> None:
        """Change the steady rate and the burst from now on."""
        ...


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
        self._clock = clock
        self._sleep = sleep
        self.rate = rate
        self.burst = max(1, burst)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._tau = (self.burst - 1) * self._interval
        self._tat = 0.0
        self._ban_until = 0.0
        # callers waiting for their slots, in arrival order: (future, slots wanted, clock when they asked)
        self._queue: deque[tuple[asyncio.Future[float], int, float]] = deque()
        self._pump: asyncio.Task[None] | None = None
        # admitted callers that have not resumed yet: future -> [slots, admitted at, charged again]
        self._departing: dict[asyncio.Future[float], list[float]] = {}
        self.bans = 0

    async def start(self) -> None:
        """Nothing to connect: a local limiter."""

    async def stop(self) -> None:
        """Stop admitting: waiting callers are cancelled (idempotent)."""
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
        while self._queue:
            self._queue.popleft()[0].cancel()

    def set_rate(self, rate: float, burst: int, now: float | None = None) -> None:
        """Change rate and burst from `now` on, without creating a burst.

        The schedule already taken (TAT, and any ban) is kept, and so is the burst credit built up so far
        (capped by the new burst): raising the burst of a busy limiter does not let a crowd go at once — the
        credit grows back only with idle time, as it would have.
        """
        old_tau = self._tau
        self.rate = rate
        self.burst = max(1, burst)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._tau = (self.burst - 1) * self._interval
        if self._interval == 0.0 or self._tau <= old_tau:
            return
        now = self._clock() if now is None else now
        credit = max(0.0, old_tau - max(0.0, self._tat - now))  # how far ahead of schedule calls may run now
        self._tat = max(self._tat, now + self._tau - credit)

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

    def _conform(self, now: float, n: int = 1) -> float:
        """Take `n` slots if they may go at `now` (return 0), else return the wait and take nothing.

        `n` slots conform when the last of them would (GCRA with weight n). A batch larger than `burst` goes
        once the schedule has fully caught up (TAT <= now) and puts the schedule n slots ahead, so the
        long-run rate holds for batches of any size.
        """
        tat = max(self._tat, now)
        wait = tat + (min(n, self.burst) - 1) * self._interval - self._tau - now
        if wait > 0:
            return wait
        self._tat = tat + n * self._interval
        return 0.0

    async def acquire(self, n: int = 1) -> float:
        """Wait for `n` slots (and for any cool-down to end); return the seconds waited.

        A caller goes at once when nobody is queued and its slots conform now. Otherwise it queues (FIFO) and
        one pump sleeps for the head of the queue; each time it wakes it admits, in order, every waiter whose
        slots conform at that instant, and sleeps again for the next. Conformance is checked at admission,
        never reserved ahead: after any stall of the event loop at most `burst` slots go together, and timer
        lateness below `tau` (e.g. millisecond timers at 5,000/s) is absorbed without losing rate. Admitting
        all conforming waiters per wake-up, not one per loop iteration, keeps high rates exact on a busy loop.
        An admitted caller resumes one loop iteration later; if the loop stalled in between (longer than
        `tau`), its slots are taken again at the time it really goes, so the calls that go at the end of a
        stall are still at most a burst.
        """
        now = self._clock()
        if not self._queue and now >= self._ban_until and (self._interval == 0.0 or self._conform(now, n) == 0.0):
            return 0.0
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append((waiter, n, now))
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._admit())
        try:
            return await waiter
        finally:
            departing = self._departing.pop(waiter, None)
            if departing is not None:
                self._charge_late(departing, self._clock())

    def _charge_late(self, departing: list[float], now: float) -> None:
        """Take an admitted caller's slots again at `now` if it goes later than `tau` after its admission."""
        slots, admitted, charged = departing
        if not charged and now - admitted > self._tau and self._interval != 0.0:
            departing[2] = 1.0
            self._tat = max(self._tat, now) + slots * self._interval

    async def _admit(self) -> None:
        """The pump: admit queued callers as their slots come due; ends when the queue is empty."""
        queue = self._queue
        try:
            while queue:
                now = self._clock()
                left = self._ban_until - now
                if left > 0:
                    await self._sleep(left)
                    continue
                waiter, n, asked = queue[0]
                if waiter.done():  # cancelled while queued: its slots were never taken
                    queue.popleft()
                    continue
                if self._interval != 0.0:
                    if self._departing:  # admitted before a stall and not gone yet (the oldest first)
                        oldest = next(iter(self._departing.values()))
                        if now - oldest[1] > self._tau:
                            for departing in self._departing.values():
                                self._charge_late(departing, now)
                    wait = self._conform(now, n)
                    if wait > 0:
                        await self._sleep(wait)
                        continue
                    self._departing[waiter] = [float(n), now, 0.0]
                queue.popleft()
                waiter.set_result(now - asked)
        finally:
            if self._pump is asyncio.current_task():
                self._pump = None
