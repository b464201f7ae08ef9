"""PartitionOffsets: the contiguous-prefix commit watermark of one partition."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bridge.kafka.offsets import PartitionOffsets


def tracked(offsets: list[int], pending: int = 1, max_pending: int = 100) -> PartitionOffsets:
    window = PartitionOffsets(max_pending)
    for offset in offsets:
        window.track(offset, pending, timestamp_ms=offset * 10)
    return window


# --------------------------------------------------------------------------- examples
def test_nothing_tracked_and_nothing_committed_gives_no_commit_point() -> None:
    window = PartitionOffsets(10)
    assert window.commit_point() is None
    assert window.committed is None
    assert len(window) == 0
    assert window.oldest_unfinished() is None
    assert window.in_progress == 0


def test_a_known_committed_offset_alone_is_not_committed_again() -> None:
    window = PartitionOffsets(10, committed=42)
    assert window.committed == 42
    assert window.commit_point() is None


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    window = tracked([0, 1, 2, 3, 4])
    window.complete(3)
    window.complete(1)
    assert window.commit_point() == 0
    window.complete(0)
    assert window.commit_point() == 2
    window.complete(2)
    assert window.commit_point() == 4
    window.complete(4)
    assert window.commit_point() == 5
    assert len(window) == 0


def test_offset_gaps_commit_to_the_next_fetched_offset_or_one_past_the_last() -> None:
    window = tracked([10, 13, 20])
    window.complete(10)
    assert window.commit_point() == 13
    window.complete(20)
    assert window.commit_point() == 13
    window.complete(13)
    assert window.commit_point() == 21


def test_record_without_messages_is_finished_at_once() -> None:
    window = PartitionOffsets(10)
    window.track(0, 0)
    assert window.commit_point() == 1
    assert len(window) == 0


def test_records_without_messages_behind_an_unfinished_one_wait_for_it() -> None:
    window = PartitionOffsets(10)
    window.track(1, 1)
    window.track(2, 0)
    window.track(3, 0)
    assert window.commit_point() == 1
    assert len(window) == 3
    assert window.in_progress == 1
    window.complete(1)
    assert window.commit_point() == 4
    assert len(window) == 0


def test_record_with_several_messages_finishes_with_its_last_message() -> None:
    window = tracked([0], pending=3)
    window.complete(0)
    window.complete(0)
    assert window.commit_point() == 0
    window.complete(0)
    assert window.commit_point() == 1


def test_complete_with_a_count_finishes_that_many_messages() -> None:
    window = tracked([7], pending=3)
    window.complete(7, count=2)
    assert window.commit_point() == 7
    window.complete(7, count=1)
    assert window.commit_point() == 8


def test_finished_counts_final_messages_and_message_less_records_but_not_unknown_offsets() -> None:
    # the count behind `kafka.commit_every_messages`: what became final, whatever its place in the window
    window = PartitionOffsets(10)
    window.track(0, 0)  # skipped at once: one
    window.track(1, 3)
    window.track(2, 0)  # finished at fetch, behind an unfinished record: one
    assert window.finished == 2
    window.complete(1, count=2)
    window.complete(99)  # not tracked (revoked or finished already): nothing
    assert window.finished == 4
    window.complete(1)
    assert window.finished == 5 and window.commit_point() == 3


def test_add_makes_a_record_wait_for_more_messages() -> None:
    window = tracked([0])
    window.add(0, 2)
    window.complete(0)
    window.complete(0)
    assert window.commit_point() == 0
    window.complete(0)
    assert window.commit_point() == 1


@pytest.mark.parametrize(
    ("offsets", "unknown"),
    [([], 0), ([5], 4), ([5], 6)],
    ids=["nothing-tracked", "before-window", "after-window"],
)
def test_add_to_a_record_not_tracked_raises_key_error(offsets: list[int], unknown: int) -> None:
    window = tracked(offsets)
    with pytest.raises(KeyError):
        window.add(unknown)


def test_add_to_a_finished_record_raises_key_error() -> None:
    window = tracked([0, 1])
    window.complete(1)
    with pytest.raises(KeyError):
        window.add(1)


def test_completing_an_unknown_or_finished_record_changes_nothing() -> None:
    window = tracked([0, 1])
    window.complete(1)
    window.complete(1)  # already finished
    window.complete(99)  # never tracked (or revoked and forgotten)
    assert window.commit_point() == 0
    assert window.in_progress == 1
    assert len(window) == 2


@pytest.mark.parametrize("offset", [3, 2], ids=["same-offset", "lower-offset"])
def test_tracking_out_of_order_raises_value_error(offset: int) -> None:
    window = tracked([0, 3])
    with pytest.raises(ValueError, match="out of order"):
        window.track(offset, 1)


def test_full_when_the_window_holds_max_pending_records() -> None:
    window = PartitionOffsets(3)
    window.track(0, 1)
    window.track(1, 1)
    states = [window.full]
    window.track(2, 0)  # finished, but held behind the unfinished head
    states.append(window.full)
    window.complete(1)  # still held behind offset 0
    states.append(window.full)
    window.complete(0)
    states.append(window.full)
    assert states == [False, True, True, False]
    assert len(window) == 0


def test_mark_committed_only_moves_forward() -> None:
    window = tracked([0, 1, 2])
    window.complete(0)
    window.complete(1)
    assert window.commit_point() == 2
    window.mark_committed(2)
    assert window.committed == 2
    assert window.commit_point() is None  # nothing new to commit
    window.mark_committed(1)
    assert window.committed == 2
    window.complete(2)
    assert window.commit_point() == 3


def test_commit_point_from_a_committed_start_skips_nothing_unfinished() -> None:
    window = PartitionOffsets(10, committed=100)
    window.track(100, 1)
    window.track(101, 0)
    assert window.commit_point() is None  # 100 is already the committed position
    window.complete(100)
    assert window.commit_point() == 102


def test_oldest_unfinished_reports_offset_and_timestamp_of_the_head() -> None:
    window = PartitionOffsets(10)
    window.track(4, 1, timestamp_ms=1_000)
    window.track(5, 1, timestamp_ms=2_000)
    window.track(6, 1, timestamp_ms=3_000)
    assert window.oldest_unfinished() == (4, 1_000)
    window.complete(5)
    window.complete(4)
    assert window.oldest_unfinished() == (6, 3_000)
    window.complete(6)
    assert window.oldest_unfinished() is None


# --------------------------------------------------------------------------- model-based
@dataclass
class _Record:
    offset: int
    pending: int
    timestamp_ms: int


class OffsetsMachine(RuleBasedStateMachine):
    """Any interleaving of track / add / complete / commit agrees with a plain list model."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[_Record] = []
        self.initial: int | None = None
        self.window = PartitionOffsets(1)
        self.committed_history: list[int] = []

    @initialize(committed=st.none() | st.integers(0, 1_000), max_pending=st.integers(1, 8))
    def start(self, committed: int | None, max_pending: int) -> None:
        self.initial = committed
        self.window = PartitionOffsets(max_pending, committed)

    def unfinished(self) -> list[_Record]:
        return [r for r in self.records if r.pending > 0]

    def expected_point(self) -> int | None:
        waiting = self.unfinished()
        if waiting:
            return waiting[0].offset
        if self.records:
            return self.records[-1].offset + 1
        return self.initial

    @rule(gap=st.integers(1, 4), pending=st.integers(0, 3), ts=st.integers(0, 10**13))
    def track(self, gap: int, pending: int, ts: int) -> None:
        base = self.records[-1].offset if self.records else (self.initial or 0) - 1
        offset = base + gap
        self.window.track(offset, pending, ts)
        self.records.append(_Record(offset, pending, ts))

    @precondition(lambda self: bool(self.unfinished()))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        record = data.draw(st.sampled_from(self.unfinished()))
        count = data.draw(st.integers(1, record.pending))
        self.window.complete(record.offset, count)
        record.pending -= count

    @precondition(lambda self: bool(self.unfinished()))
    @rule(data=st.data(), more=st.integers(1, 3))
    def add(self, data: st.DataObject, more: int) -> None:
        record = data.draw(st.sampled_from(self.unfinished()))
        self.window.add(record.offset, more)
        record.pending += more

    @rule(offset=st.integers(-5, 2_000))
    def complete_something_not_pending(self, offset: int) -> None:
        if any(r.offset == offset and r.pending > 0 for r in self.records):
            return
        self.window.complete(offset)

    @rule()
    def commit(self) -> None:
        point = self.window.commit_point()
        if point is not None:
            self.window.mark_committed(point)
            self.committed_history.append(point)

    @rule(back=st.integers(1, 50))
    def stale_commit_ack(self, back: int) -> None:
        if self.window.committed is not None:
            before = self.window.committed
            self.window.mark_committed(before - back)
            assert self.window.committed == before

    @invariant()
    def commit_point_is_the_first_unfinished_offset(self) -> None:
        expected = self.expected_point()
        committed = self.window.committed
        if expected is None or (committed is not None and expected <= committed):
            assert self.window.commit_point() is None
        else:
            assert self.window.commit_point() == expected

    @invariant()
    def nothing_unfinished_below_commit_point_or_committed(self) -> None:
        for bound in (self.window.commit_point(), self.window.committed):
            if bound is not None:
                assert all(r.pending <= 0 for r in self.records if r.offset < bound)

    @invariant()
    def committed_is_monotonic(self) -> None:
        assert self.committed_history == sorted(set(self.committed_history))

    @invariant()
    def window_holds_from_first_unfinished_to_last(self) -> None:
        waiting = self.unfinished()
        held = 0 if not waiting else sum(1 for r in self.records if r.offset >= waiting[0].offset)
        assert len(self.window) == held
        assert self.window.full == (held >= self.window.max_pending)
        assert self.window.in_progress == len(waiting)

    @invariant()
    def oldest_unfinished_is_the_first_unfinished_record(self) -> None:
        waiting = self.unfinished()
        expected = (waiting[0].offset, waiting[0].timestamp_ms) if waiting else None
        assert self.window.oldest_unfinished() == expected


TestOffsetsModel = OffsetsMachine.TestCase
TestOffsetsModel.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
