"""The units of work inside the daemon: a partition's state, a fetched record, a message job, a dead letter.

Plain data shared by the source (which creates them), the delivery engine (which finishes them) and the
dead-letter sink (which publishes them). No I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

from bridge.kafka.offsets import PartitionOffsets
from bridge.models import MobileReceiverMessageEvent, Outcome, RecordMeta
from bridge.redact import redact


@dataclass(slots=True, eq=False)
class PartitionState:
    """One assigned partition: its commit watermark, in-flight count and flags."""

    topic: str
    partition: int
    offsets: PartitionOffsets
    revoked: bool = False
    in_flight: int = 0
    fetch_paused: bool = False
    highwater: int | None = None
    first_offset: int | None = None


@dataclass(slots=True, eq=False)
class RecordRef:
    """A fetched record, kept until all its messages are final (for the dead-letter copy)."""

    part: PartitionState
    meta: RecordMeta
    value: bytes | None

    def complete(self, count: int = 1) -> None:
        """`count` of this record's messages are final."""
        self.part.offsets.complete(self.meta.offset, count)


@dataclass(slots=True, eq=False)
class Job:
    """One message on its way to the gateway, with its retry state."""

    rule: str
    message: MobileReceiverMessageEvent
    record: RecordRef
    key: Hashable | None  # ordering key; None = no ordering
    attempts: int = 0
    first_attempt_ms: int | None = None
    last_attempt_ms: int | None = None
    first_attempt_mono: float | None = None
    held_mark: float = 0.0  # the engine's held time at the first attempt (held time is not age)
    last_outcome: Outcome | None = None


@dataclass(slots=True)
class DeadLetter:
    """What goes to the dead-letter topic: the original record plus why."""

    record: RecordRef
    reason: str  # invalid record reason | mapping_error | rejected | retries_exhausted | max_age
    message: str  # human-readable cause
    rule: str | None = None
    field: str | None = None
    code: int | None = None
    sub_code: str | None = None
    attempts: int = 0
    first_attempt_ms: int | None = None
    last_attempt_ms: int | None = None
    msg_key: str | None = None
    payload: bytes | None = None  # the rendered API message, when there was one
    extra_headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        """Original headers followed by the `bridge.*` context headers (secrets scrubbed from the texts).

        Phone numbers are NOT masked here: the dead-letter topic holds the full record (see the docs on
        protecting it); only credentials that an error text may quote are removed.
        """
        meta = self.record.meta
        out = list(meta.headers)
        ctx: dict[str, str | int | None] = {
            "bridge.reason": self.reason,
            "bridge.error": redact(self.message),
            "bridge.rule": self.rule,
            "bridge.field": self.field,
            "bridge.code": self.code,
            "bridge.sub_code": self.sub_code,
            "bridge.attempts": self.attempts,
            "bridge.first_attempt_ms": self.first_attempt_ms,
            "bridge.last_attempt_ms": self.last_attempt_ms,
            "bridge.msg_key": self.msg_key,
            "bridge.source_topic": meta.topic,
            "bridge.source_partition": meta.partition,
            "bridge.source_offset": meta.offset,
            "bridge.source_timestamp_ms": meta.timestamp_ms,
        }
        ctx.update((k, redact(v)) for k, v in self.extra_headers.items())
        out.extend((k, str(v).encode()) for k, v in ctx.items() if v is not None)
        if self.payload is not None:
            out.append(("bridge.message", self.payload))
        return out
