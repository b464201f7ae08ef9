"""The simulated gateway's state: fault knobs, the sliding-window app throttle, accepted messages, stats.

Pure (no I/O, no aiohttp); time comes in as arguments so the tests can drive it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

# The exclusive per-request faults, in the order one uniform draw is compared against their rates.
FAULT_KINDS = ("drop", "hang", "http_502", "http_503", "bad_body", "isp_error", "business_failure")
# In a batch, the first five hit the HTTP request (all its calls); the last two hit each call on its own.
REQUEST_FAULTS = FAULT_KINDS[:5]
CALL_FAULTS = FAULT_KINDS[5:]
_RATE_FIELDS = {
    "drop": "drop_rate",
    "hang": "hang_rate",
    "http_502": "http_502_rate",
    "http_503": "http_503_rate",
    "bad_body": "bad_body_rate",
    "isp_error": "isp_error_rate",
    "business_failure": "business_failure_rate",
}


@dataclass(frozen=True, slots=True)
class Faults:
    """Everything that can be tuned at start (CLI flags) and at run time (`POST /_sim/faults`).

    Rates are probabilities per request and exclusive: at most one fault hits a request, so they must add
    up to at most 1. Latency is `latency_ms` plus a uniform `0..latency_jitter_ms`. `qps` 0 = unlimited;
    a batch of N calls counts N against it. A request body over `max_body_bytes` (0 = no limit) is answered
    HTTP 413.
    """

    qps: int = 0
    ban_seconds: float = 1.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    http_502_rate: float = 0.0
    http_503_rate: float = 0.0
    bad_body_rate: float = 0.0
    isp_error_rate: float = 0.0
    business_failure_rate: float = 0.0
    reject_mobile_prefixes: tuple[str, ...] = ()
    seed: int | None = None
    max_body_bytes: int = 0

    def __post_init__(self) -> None:
        if self.qps < 0:
            raise ValueError("qps must be >= 0 (0 = unlimited)")
        if self.max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0 (0 = no limit)")
        for name in ("ban_seconds", "latency_ms", "latency_jitter_ms", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        total = 0.0
        for name in _RATE_FIELDS.values():
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            total += rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total:g}; at most one fault hits a request, so <= 1")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied (partial update); ValueError names an unknown or mistyped knob."""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault knob {key!r} (known: {', '.join(sorted(known))})")
            clean[key] = _coerce(key, value)
        return replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready knobs."""
        out = asdict(self)
        out["reject_mobile_prefixes"] = list(self.reject_mobile_prefixes)
        return out

    def cumulative(self, kinds: tuple[str, ...] = FAULT_KINDS) -> tuple[tuple[float, str], ...]:
        """(upper bound, fault kind) for the `kinds` with a non-zero rate, in FAULT_KINDS order."""
        bounds, acc = [], 0.0
        for kind in kinds:
            rate = float(getattr(self, _RATE_FIELDS[kind]))
            if rate > 0:
                acc += rate
                bounds.append((acc, kind))
        return tuple(bounds)


def _coerce(key: str, value: Any) -> Any:
    if key == "reject_mobile_prefixes":
        if isinstance(value, str):
            value = [p for p in value.split(",") if p]
        if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
            raise ValueError("reject_mobile_prefixes must be a list of strings")
        return tuple(value)
    if key == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("seed must be an integer or null")
        return value
    if key in ("qps", "max_body_bytes"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


class Throttle:
    """App-level QPS limit with a sliding one-second window; exceeding it starts a ban.

    During a ban every call is refused (and counted); the window starts empty after the ban. A batch is
    admitted whole or not at all: its N calls must all fit in the window, else the ban starts.
    """

    __slots__ = ("ban_seconds", "ban_until", "bans", "calls_during_ban", "qps", "window")

    def __init__(self, qps: int, ban_seconds: float) -> None:
        self.qps = qps
        self.ban_seconds = ban_seconds
        self.window: deque[float] = deque()
        self.ban_until = 0.0
        self.bans = 0
        self.calls_during_ban = 0

    def admit(self, now: float, calls: int = 1) -> int | None:
        """None if the `calls` may pass, else the whole seconds of ban left (for the sub_msg, at least 1)."""
        if not self.qps:
            return None
        if now < self.ban_until:
            self.calls_during_ban += calls
            return max(1, math.ceil(self.ban_until - now))
        window = self.window
        edge = now - 1.0
        while window and window[0] <= edge:
            window.popleft()
        if len(window) + calls <= self.qps:
            window.extend([now] * calls)
            return None
        self.bans += 1
        self.ban_until = now + self.ban_seconds
        window.clear()
        return max(1, math.ceil(self.ban_seconds))


@dataclass(slots=True)
class MessageRecord:
    """One accepted msg_key: the message as received, how often and when (epoch seconds)."""

    msg_key: str
    message: dict[str, Any]
    count: int
    first_received: float
    last_received: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "msg_key": self.msg_key,
            "message": self.message,
            "count": self.count,
            "first_received": self.first_received,
            "last_received": self.last_received,
        }


@dataclass(slots=True)
class Stats:
    """Counters of one simulator; `refusals` is keyed by error_response code, `http_errors` by status.

    Bans and calls refused during a ban are counted by the Throttle and merged in `SimState.stats_dict()`.
    """

    total_requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    http_errors: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    hung: int = 0
    bad_bodies: int = 0
    business_failures: int = 0
    batches: int = 0
    batch_messages: int = 0

    def refuse(self, code: int) -> None:
        """Count one error_response."""
        key = str(code)
        self.refusals[key] = self.refusals.get(key, 0) + 1


class SimState:
    """All mutable state of one simulator: faults, rng, throttle, accepted messages and stats."""

    def __init__(self, faults: Faults) -> None:
        self.initial_faults = faults
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.throttle = Throttle(faults.qps, faults.ban_seconds)
        self.messages: dict[str, MessageRecord] = {}
        self.stats = Stats()
        self._set_bounds()

    def set_faults(self, faults: Faults) -> None:
        """Apply new knobs; a new seed restarts the random sequence. The throttle keeps its window."""
        if faults.seed != self.faults.seed:
            self.rng = random.Random(faults.seed)
        self.faults = faults
        self.throttle.qps = faults.qps
        self.throttle.ban_seconds = faults.ban_seconds
        self._set_bounds()

    def reset(self) -> None:
        """Forget messages, stats, bans and runtime fault changes: back to the start configuration."""
        self.faults = self.initial_faults
        self.rng = random.Random(self.faults.seed)
        self.throttle = Throttle(self.faults.qps, self.faults.ban_seconds)
        self.messages.clear()
        self.stats = Stats()
        self._set_bounds()

    def _set_bounds(self) -> None:
        self._bounds = self.faults.cumulative()
        self._request_bounds = self.faults.cumulative(REQUEST_FAULTS)
        self._call_bounds = self.faults.cumulative(CALL_FAULTS)

    def draw_fault(self) -> str | None:
        """The fault for the next single call (one uniform draw), or None. No draw when no rate is set."""
        return self._draw(self._bounds)

    def draw_request_fault(self) -> str | None:
        """The fault for a whole batch request (drop, hang, HTTP 502/503, bad body), or None."""
        return self._draw(self._request_bounds)

    def draw_call_fault(self) -> str | None:
        """The fault for one call inside a batch (isp_error, business_failure), or None."""
        return self._draw(self._call_bounds)

    def _draw(self, bounds: tuple[tuple[float, str], ...]) -> str | None:
        if not bounds:
            return None
        u = self.rng.random()
        for bound, kind in bounds:
            if u < bound:
                return kind
        return None

    def latency_seconds(self) -> float:
        """The injected latency for the next request."""
        f = self.faults
        ms = f.latency_ms
        if f.latency_jitter_ms:
            ms += self.rng.uniform(0.0, f.latency_jitter_ms)
        return ms / 1000.0

    def rejects_mobile(self, mobile: str | None) -> bool:
        """Whether this recipient is refused permanently (`reject_mobile_prefixes`)."""
        prefixes = self.faults.reject_mobile_prefixes
        return bool(prefixes) and mobile is not None and mobile.startswith(prefixes)

    def record(self, msg_key: str, message: dict[str, Any], now: float) -> bool:
        """Store an accepted message; True if its msg_key was new, False for a duplicate."""
        rec = self.messages.get(msg_key)
        if rec is None:
            self.messages[msg_key] = MessageRecord(msg_key, message, 1, now, now)
            self.stats.accepted += 1
            return True
        rec.count += 1
        rec.last_received = now
        self.stats.duplicates += 1
        return False

    def stats_dict(self) -> dict[str, Any]:
        """Stats as JSON-ready data (throttle counters folded in)."""
        s = self.stats
        return {
            "total_requests": s.total_requests,
            "accepted": s.accepted,
            "duplicates": s.duplicates,
            "refusals": dict(s.refusals),
            "http_errors": dict(s.http_errors),
            "dropped": s.dropped,
            "hung": s.hung,
            "bad_bodies": s.bad_bodies,
            "business_failures": s.business_failures,
            "batches": s.batches,
            "batch_messages": s.batch_messages,
            "bans": self.throttle.bans,
            "calls_during_ban": self.throttle.calls_during_ban,
        }
