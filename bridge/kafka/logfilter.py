"""Keep aiokafka's own log lines useful: no ERROR on a normal start, no flood during an outage.

aiokafka logs at ERROR what is routine while a group or a topic is being set up (the coordinator is not known
yet, an auto-created topic is not in the metadata yet), and repeats the same line many times a second while
a broker is away. The bridge reports those conditions itself, once and with context (`bridge.kafka`,
`bridge.source`, `bridge.dead_letter` and /readyz). So, for records of the `aiokafka` loggers:
- routine set-up messages go to DEBUG; if one keeps coming for `PERSIST_SECONDS`, it is said once at WARNING;
- any other message is logged the first time; repeats of the same message (same logger and template) within
  `REPEAT_WINDOW_SECONDS` are dropped and counted, and the count is said with the next one let through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

REPEAT_WINDOW_SECONDS = 60.0
PERSIST_SECONDS = 30.0

# Message templates (the `msg` of the record, before formatting) that are routine during set-up.
ROUTINE = (
    "Group Coordinator Request failed",
    "not found in cluster metadata",
    "Coordinator dead",
    "Topic %s not found in cluster metadata",
    "No partition metadata for topic",
    "Unable to request metadata from node",
    "OffsetCommit failed for group",
    "Unable connect to",  # every failed connection attempt: bridge.kafka says it once per attempt, with context
    "Unable to connect to",
    "Unable to update metadata from",
)
ROUTINE_ERRORS = ("GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError", "CoordinatorLoadInProgress")


@dataclass(slots=True)
class _Seen:
    first: float
    window_start: float
    suppressed: int = 0
    warned: bool = False


def _routine(record: logging.LogRecord) -> bool:
    template = str(record.msg)
    if any(part in template for part in ROUTINE):
        return True
    text = record.getMessage()
    return any(name in text for name in ROUTINE_ERRORS)


class KafkaLogFilter(logging.Filter):
    """A handler filter (it must see records of every `aiokafka.*` logger)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        now = self._clock()
        key = (record.name, str(record.msg))
        seen = self._seen.get(key)
        if _routine(record):
            if seen is None:
                self._seen[key] = _Seen(now, now)
            elif not seen.warned and now - seen.first >= PERSIST_SECONDS:
                seen.warned = True
                record.levelno, record.levelname = logging.WARNING, "WARNING"
                record.msg = f"{record.msg} (still reported after {now - seen.first:.0f} s)"
                return True
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if seen is None or now - seen.window_start >= REPEAT_WINDOW_SECONDS:
            suppressed = seen.suppressed if seen is not None else 0
            self._seen[key] = _Seen(now if seen is None else seen.first, now)
            if suppressed:
                record.msg = f"{record.msg} (and {suppressed} more like it in the last {REPEAT_WINDOW_SECONDS:.0f} s)"
            return True
        seen.suppressed += 1
        return False


def install(handler: logging.Handler, clock: Callable[[], float] = time.monotonic) -> KafkaLogFilter:
    """Add the filter to a handler (idempotent: an existing one is kept)."""
    for existing in handler.filters:
        if isinstance(existing, KafkaLogFilter):
            return existing
    flt = KafkaLogFilter(clock)
    handler.addFilter(flt)
    return flt
