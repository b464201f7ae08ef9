"""Per-partition commit watermark: commit only the contiguous prefix of finished records. Pure.

Records are tracked in the order they were fetched (offsets may have gaps: compaction, transaction markers).
Each record has a count of unfinished messages; a record with none is finished at once. The commit point is
the offset of the first unfinished record, or one past the last record when all are finished — exactly the
"next offset to read" Kafka expects.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Slot:
    offset: int
    pending: int
    timestamp_ms: int


class PartitionOffsets:
    """Out-of-order completion, in-order commit, for one partition."""

    __slots__ = ("_by_offset", "_committed", "_done_upto", "_slots", "max_pending")

    def __init__(self, max_pending: int, committed: int | None = None) -> None:
        self.max_pending = max_pending
        self._slots: deque[_Slot] = deque()
        self._by_offset: dict[int, _Slot] = {}
        self._committed = committed  # last committed "next offset", None if unknown
        self._done_upto: int | None = committed  # next offset after the finished prefix

    def __len__(self) -> int:
        """Unfinished-or-uncommittable records held (the out-of-order window)."""
        return len(self._slots)

    @property
    def full(self) -> bool:
        """The window is full: pause fetching this partition."""
        return len(self._slots) >= self.max_pending

    def track(self, offset: int, pending: int, timestamp_ms: int = 0) -> None:
        """Record fetched with `pending` messages to finish (0 = finished already)."""
        if self._slots and offset <= self._slots[-1].offset:
            raise ValueError(f"offset {offset} fetched out of order (last {self._slots[-1].offset})")
        if pending <= 0 and not self._slots:
            self._done_upto = offset + 1
            return
        slot = _Slot(offset, max(0, pending), timestamp_ms)
        self._slots.append(slot)
        if pending > 0:
            self._by_offset[offset] = slot
        self._advance()

    def add(self, offset: int, count: int = 1) -> None:
        """More messages for a record that is still tracked (e.g. a retry spawned work)."""
        slot = self._by_offset.get(offset)
        if slot is None:
            raise KeyError(offset)
        slot.pending += count

    def complete(self, offset: int, count: int = 1) -> None:
        """`count` messages of the record at `offset` reached a final state."""
        slot = self._by_offset.get(offset)
        if slot is None:
            return  # already finished or revoked: nothing to do
        slot.pending -= count
        if slot.pending <= 0:
            del self._by_offset[offset]
            self._advance()

    def _advance(self) -> None:
        slots = self._slots
        while slots and slots[0].pending <= 0:
            self._done_upto = slots.popleft().offset + 1

    def commit_point(self) -> int | None:
        """The offset to commit now, or None when nothing new is committable."""
        point = self._slots[0].offset if self._slots else self._done_upto
        if point is None or (self._committed is not None and point <= self._committed):
            return None
        return point

    def mark_committed(self, offset: int) -> None:
        """The broker accepted a commit of `offset`."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    @property
    def committed(self) -> int | None:
        """The last committed offset (the next one to read after a restart)."""
        return self._committed

    def oldest_unfinished(self) -> tuple[int, int] | None:
        """(offset, timestamp_ms) of the oldest unfinished record, for the age metric."""
        for slot in self._slots:
            if slot.pending > 0:
                return slot.offset, slot.timestamp_ms
        return None

    @property
    def in_progress(self) -> int:
        """Records with unfinished messages."""
        return len(self._by_offset)
