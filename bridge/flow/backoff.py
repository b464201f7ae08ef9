"""Exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(attempt: int, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number `attempt` (1-based): uniform in [0, min(maximum, initial * 2**(attempt-1))]."""
    ceiling = min(maximum, initial * (2.0 ** min(max(attempt - 1, 0), 62)))
    return rand() * ceiling


def probe_delay(previous: float | None, initial: float, maximum: float) -> float:
    """Next delay between probes while paused: doubles from `initial` up to `maximum` (no jitter)."""
    return initial if previous is None else min(maximum, previous * 2.0)
