"""The result of one `bridge check` probe: a status and one line of explanation. Pure data.

ok    the probe passed
warn  it passed, but something deserves attention (a clock 60-600 s off, a DLQ topic not created yet)
fail  the bridge would not work (or would lose its way) with this config: exit status 1
skip  the probe could not run because an earlier one failed (no connection, no answer)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """How a probe ended."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    """One probe: `name` says what was checked (`gateway credentials`, `kafka topic X` …), `detail` the finding."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        """`FAIL  name: detail`, the status padded so the names line up."""
        return f"{self.status.value.upper():<5} {self.name}: {self.detail}"


def summary(checks: Iterable[Check]) -> str:
    """`2 ok, 1 warning, 1 failed` (skipped probes counted too when there are any)."""
    counts = dict.fromkeys(Status, 0)
    for check in checks:
        counts[check.status] += 1
    parts = [f"{counts[Status.OK]} ok"]
    if counts[Status.WARN]:
        parts.append(f"{counts[Status.WARN]} warning{'s' if counts[Status.WARN] > 1 else ''}")
    if counts[Status.FAIL]:
        parts.append(f"{counts[Status.FAIL]} failed")
    if counts[Status.SKIP]:
        parts.append(f"{counts[Status.SKIP]} skipped")
    return ", ".join(parts)


def failed(checks: Iterable[Check]) -> bool:
    """Whether any probe failed."""
    return any(c.status is Status.FAIL for c in checks)
