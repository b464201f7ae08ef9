"""Adaptive rate after a gateway ban: halve on each ban, climb back a step per ban-free interval. Pure.

A code-7 ban says the app went over its quota. Resuming at the configured rate with a full burst right after
the ban is how a bridge loops from ban to ban (the burst alone can exceed the quota). So after a ban:

    rate  = max(min_rate, current × decrease)        (current = the configured rate, or, when unlimited,
    burst = 1                                          the rate actually seen in the second before the ban)
    every `interval` seconds without a ban: rate += step (target × step_fraction), never above the target
    back at the target for one more interval: the configured burst returns (unlimited stays unlimited)

`Recovery` holds that state; the engine calls `on_ban` and `on_tick` and applies what they return.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateSetting:
    """What the limiter should run at: `rate <= 0` means unlimited."""

    rate: float
    burst: int


class Recovery:
    """The adaptive-rate state machine of one process (injected time, no I/O)."""

    def __init__(
        self,
        configured_rate: float,
        configured_burst: int,
        *,
        decrease: float = 0.5,
        step_fraction: float = 0.1,
        interval_seconds: float = 10.0,
        min_rate: float = 1.0,
    ) -> None:
        self.configured = RateSetting(configured_rate, max(1, configured_burst))
        self.decrease = decrease
        self.step_fraction = step_fraction
        self.interval = interval_seconds
        self.min_rate = min_rate
        self.current = self.configured
        self._target = configured_rate
        self._last_change = 0.0

    @property
    def recovering(self) -> bool:
        """Below the configured setting (rate or burst)."""
        return self.current != self.configured

    def on_ban(self, now: float, observed_rate: float) -> RateSetting:
        """A new ban began at `now`; `observed_rate` is the call rate seen just before it."""
        if self.current.rate > 0:
            base = self.current.rate
        else:  # unlimited: the only rate we know the gateway refused is the one we were sending at
            base = max(observed_rate, self.min_rate)
            self._target = base
        if self.configured.rate > 0:
            self._target = self.configured.rate
        self.current = RateSetting(max(self.min_rate, base * self.decrease), 1)
        self._last_change = now
        return self.current

    def on_tick(self, now: float) -> RateSetting | None:
        """Time passed without a ban: the new setting when it changes, else None."""
        if not self.recovering or now - self._last_change < self.interval:
            return None
        self._last_change = now
        if self.current.rate < self._target:
            step = max(self._target * self.step_fraction, self.min_rate)
            self.current = RateSetting(min(self._target, self.current.rate + step), 1)
            return self.current
        # at the target rate for a whole interval: give the configured burst (and unlimited) back
        self.current = self.configured
        return self.current
