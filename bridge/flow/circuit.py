"""A circuit breaker on the gateway as a whole: decide when transport failures are shared, not per message. Pure.

Each finished call is recorded as a transport failure (no usable gateway answer: connection refused/reset,
DNS, timeout, HTTP 5xx, an undecodable body) or as an answer (anything the gateway said, success or error).
The breaker trips when, over the last `window_seconds`, at least `min_calls` calls were recorded and the share
of failures reached `failure_ratio` — or when `consecutive_failures` calls in a row failed with nothing
answered in between (so a quiet bridge, which never reaches `min_calls`, still notices an outage).

The counts live in one-second buckets of a ring, so recording a call is O(1) and the window slides by whole
seconds. The breaker only decides; the delivery engine pauses, probes and resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trip:
    """Why the breaker opened: the window's counts at that moment."""

    calls: int
    failures: int
    consecutive: int

    def describe(self) -> str:
        """One line for logs and /readyz."""
        share = self.failures / self.calls if self.calls else 1.0
        return f"{self.failures} of {self.calls} calls failed in transport ({share:.0%}), {self.consecutive} in a row"


class CircuitBreaker:
    """Sliding-window failure ratio plus a consecutive-failure count; `record()` says when to open."""

    __slots__ = (
        "_buckets_calls",
        "_buckets_failures",
        "_calls",
        "_consecutive",
        "_failures",
        "_head",
        "consecutive_failures",
        "failure_ratio",
        "min_calls",
        "window_seconds",
    )

    def __init__(
        self, *, window_seconds: float, min_calls: int, failure_ratio: float, consecutive_failures: int
    ) -> None:
        self.window_seconds = max(1, math.ceil(window_seconds))
        self.min_calls = min_calls
        self.failure_ratio = failure_ratio
        self.consecutive_failures = consecutive_failures
        self._buckets_calls = [0] * self.window_seconds
        self._buckets_failures = [0] * self.window_seconds
        self._head = -1  # the whole second the newest bucket belongs to
        self._calls = 0
        self._failures = 0
        self._consecutive = 0

    def _slide(self, now: float) -> None:
        second = math.floor(now)
        if second <= self._head:
            return
        n = self.window_seconds
        steps = min(second - self._head, n)
        for s in range(self._head + 1, self._head + 1 + steps):
            i = s % n
            self._calls -= self._buckets_calls[i]
            self._failures -= self._buckets_failures[i]
            self._buckets_calls[i] = 0
            self._buckets_failures[i] = 0
        if second - self._head > n:  # everything aged out (rounding guard)
            self._calls = self._failures = 0
        self._head = second

    def record(self, failed: bool, now: float) -> Trip | None:
        """Count one finished call; a Trip when the breaker should open now, else None."""
        self._slide(now)
        i = self._head % self.window_seconds
        self._buckets_calls[i] += 1
        self._calls += 1
        if not failed:
            self._consecutive = 0
            return None
        self._buckets_failures[i] += 1
        self._failures += 1
        self._consecutive += 1
        if self._consecutive >= self.consecutive_failures or (
            self._calls >= self.min_calls and self._failures >= self.failure_ratio * self._calls
        ):
            return Trip(self._calls, self._failures, self._consecutive)
        return None

    def reset(self) -> None:
        """Forget the window (after the breaker closed: the outage's failures must not trip it again)."""
        self._buckets_calls = [0] * self.window_seconds
        self._buckets_failures = [0] * self.window_seconds
        self._calls = self._failures = self._consecutive = 0

    def counts(self, now: float) -> tuple[int, int]:
        """(calls, failures) in the window ending at `now`."""
        self._slide(now)
        return self._calls, self._failures
