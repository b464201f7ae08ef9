"""Per-partition commit watermark: commit only the contiguous prefix of finished records. Pure.

Records are tracked in the order they were fetched (offsets may have gaps: compaction, transaction markers).
Each record has a count of unfinished messages; a record with none is finished at once. The commit point is
the offset of the first unfinished record, or one past the last record when all are finished — exactly the
"next offset to read" Kafka expects.

Beyond the prefix the window also knows which records are finished already and, for a fan-out record, which
of its messages (by index) are: `snapshot()` hands that to the commit metadata (`bridge.kafka.progress`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Slot:
    offset: int
    pending: int
    timestamp_ms: int
    digest: int = 0  # of the record's items (fan-out records only)
    items: int = 0
    done: set[int] | None = None  # indices of final messages (fan-out records only)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What is finished above the commit point: whole records, and messages of partly done fan-out records."""

    finished: list[int]  # ascending offsets
    partial: dict[int, tuple[int, int, frozenset[int]]]  # offset -> (digest, items, done indices)
    tracked_upto: int  # one past the last tracked record: the window knows nothing at or beyond it


class PartitionOffsets:
    """Out-of-order completion, in-order commit, for one partition."""

    __slots__ = (
        "_by_offset",
        "_committed",
        "_done_upto",
        "_slots",
        "changes",
        "committed_changes",
        "committed_metadata",
        "finished",
        "finished_at_commit",
        "max_pending",
    )

    def __init__(self, max_pending: int, committed: int | None = None, metadata: str = "") -> None:
        self.max_pending = max_pending
        self._slots: deque[_Slot] = deque()
        self._by_offset: dict[int, _Slot] = {}
        self._committed = committed  # last committed "next offset", None if unknown
        self._done_upto: int | None = committed  # next offset after the finished prefix
        self.changes = 0  # bumped by every track/complete: a commit is only rebuilt after a change
        self.committed_changes = 0  # `changes` as of the last commit
        self.committed_metadata = metadata  # the metadata of the last commit
        self.finished = 0  # messages (and message-less records) that became final here, ever
        self.finished_at_commit = 0  # `finished` when the last commit was built

    def __len__(self) -> int:
        """Unfinished-or-uncommittable records held (the out-of-order window)."""
        return len(self._slots)

    @property
    def full(self) -> bool:
        """The window is full: pause fetching this partition."""
        return len(self._slots) >= self.max_pending

    def track(
        self,
        offset: int,
        pending: int,
        timestamp_ms: int = 0,
        *,
        digest: int = 0,
        items: int = 0,
        done: frozenset[int] = frozenset(),
    ) -> None:
        """Record fetched with `pending` messages to finish (0 = finished already).

        A fan-out record (`items` > 1) remembers which of its messages are final — `done` at the start (known
        from the commit metadata), then every index passed to `complete` — under the `digest` of its items.
        """
        if self._slots and offset <= self._slots[-1].offset:
            raise ValueError(f"offset {offset} fetched out of order (last {self._slots[-1].offset})")
        self.changes += 1
        if pending <= 0:
            self.finished += 1
        if pending <= 0 and not self._slots:
            self._done_upto = offset + 1
            return
        slot = _Slot(offset, max(0, pending), timestamp_ms)
        if items > 1 and pending > 0:
            slot.digest, slot.items, slot.done = digest, items, set(done)
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

    def complete(self, offset: int, count: int = 1, index: int | None = None) -> None:
        """`count` messages of the record at `offset` reached a final state (`index`: which one, if known)."""
        slot = self._by_offset.get(offset)
        if slot is None:
            return  # already finished or revoked: nothing to do
        self.changes += 1
        self.finished += count
        if index is not None and slot.done is not None:
            slot.done.add(index)
        slot.pending -= count
        if slot.pending <= 0:
            del self._by_offset[offset]
            self._advance()

    def _advance(self) -> None:
        slots = self._slots
        while slots and slots[0].pending <= 0:
            self._done_upto = slots.popleft().offset + 1

    @property
    def position(self) -> int | None:
        """The end of the finished prefix (the commit point), whether committed already or not."""
        return self._slots[0].offset if self._slots else self._done_upto

    def commit_point(self) -> int | None:
        """The offset to commit now, or None when nothing new is committable."""
        point = self.position
        if point is None or (self._committed is not None and point <= self._committed):
            return None
        return point

    def mark_committed(self, offset: int, metadata: str = "", changes: int | None = None) -> None:
        """The broker accepted a commit of `offset` with `metadata`, built when `changes` was current."""
        if self._committed is None or offset >= self._committed:
            self._committed = offset
            self.committed_metadata = metadata
            if changes is not None:
                self.committed_changes = changes

    def snapshot(self) -> Snapshot:
        """Finished records above the commit point and partly done fan-out records, for commit metadata."""
        finished: list[int] = []
        partial: dict[int, tuple[int, int, frozenset[int]]] = {}
        for slot in self._slots:
            if slot.pending <= 0:
                finished.append(slot.offset)
            elif slot.done:
                partial[slot.offset] = (slot.digest, slot.items, frozenset(slot.done))
        last = self._slots[-1].offset + 1 if self._slots else self._done_upto
        return Snapshot(finished, partial, last if last is not None else 0)

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
