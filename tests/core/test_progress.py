"""Commit metadata (bridge.kafka.progress): round trip, size bound, truth under truncation, garbage in."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.kafka.offsets import PartitionOffsets
from bridge.kafka.progress import (
    DEFAULT_BUDGET,
    PREFIX,
    Partial,
    Progress,
    commit_request,
    decode,
    encode,
    items_digest,
    to_ranges,
    union,
)

BIG = 1 << 20  # a budget nothing in these tests reaches

offset_sets = st.sets(st.integers(min_value=1, max_value=20_000), max_size=400)
partials = st.dictionaries(
    st.integers(min_value=1, max_value=20_000),
    st.tuples(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=2, max_value=600),
        st.sets(st.integers(min_value=0, max_value=599), min_size=1, max_size=60),
    ),
    max_size=8,
)


def as_partial(raw: dict[int, tuple[int, int, set[int]]], base: int) -> dict[int, Partial]:
    """Partial records at base + o (o >= 1 in the strategies; offset `base` itself is covered by examples)."""
    return {
        base + o: Partial(d, n, to_ranges(sorted(i for i in done if i < n)))
        for o, (d, n, done) in raw.items()
        if any(i < n for i in done)
    }


def offsets_of(progress: Progress) -> set[int]:
    return {o for s, e in progress.finished for o in range(s, e)}


def indices(p: Partial) -> set[int]:
    return {i for s, e in p.done for i in range(s, e)}


# --------------------------------------------------------------------------- properties
@given(base=st.integers(min_value=0, max_value=2**62), rel=offset_sets, raw=partials)
@settings(max_examples=300, deadline=None)
def test_round_trip_of_any_finished_set_and_partial_fanouts(base: int, rel: set[int], raw: dict) -> None:
    finished = to_ranges(sorted(base + r for r in rel))
    partial = as_partial(raw, base)
    enc = encode(base, finished, partial, BIG)
    assert not enc.overflow
    if not rel and not partial:
        assert enc.metadata == ""
        assert decode(enc.metadata, base).progress is None
        return
    assert enc.metadata.startswith(PREFIX)
    got = decode(enc.metadata, base)
    assert got.problem is None and got.progress is not None
    assert offsets_of(got.progress) == {base + r for r in rel}
    assert dict(got.progress.partial) == partial
    for o in rel:
        assert got.progress.is_finished(base + o)
    assert not got.progress.is_finished(base)


@given(
    base=st.integers(min_value=0, max_value=10**12),
    rel=offset_sets,
    raw=partials,
    budget=st.integers(min_value=0, max_value=1500),
)
@settings(max_examples=300, deadline=None)
def test_any_budget_is_kept_and_what_is_kept_is_true(base: int, rel: set[int], raw: dict, budget: int) -> None:
    finished = to_ranges(sorted(base + r for r in rel))
    partial = as_partial(raw, base)
    enc = encode(base, finished, partial, budget)
    assert len(enc.metadata) <= budget
    full = encode(base, finished, partial, BIG).metadata
    assert enc.overflow == (enc.metadata != full)
    got = decode(enc.metadata, base).progress
    if got is None:
        return
    # a truncated picture only leaves things out: nothing it marks finished was not finished
    assert offsets_of(got) <= {base + r for r in rel}
    for o, p in got.partial.items():
        assert o in partial and p.digest == partial[o].digest and p.items == partial[o].items
        assert indices(p) <= indices(partial[o])


@given(text=st.text(max_size=300), committed=st.one_of(st.none(), st.integers(min_value=-5, max_value=2**63)))
@settings(max_examples=500, deadline=None)
def test_decode_never_raises_on_arbitrary_text(text: str, committed: int | None) -> None:
    for metadata in (text, PREFIX + text, "v2:" + text):
        got = decode(metadata, committed)
        assert got.progress is None or got.problem is None


@given(payload=st.binary(max_size=400), committed=st.integers(min_value=0, max_value=300))
@settings(max_examples=500, deadline=None)
def test_decode_never_raises_on_well_wrapped_garbage(payload: bytes, committed: int) -> None:
    for blob in (payload, zlib.compress(payload)):
        metadata = PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
        got = decode(metadata, committed)
        if got.progress is not None:
            assert got.progress.base == committed
            got.progress.is_finished(committed + 1)
            assert got.progress.end >= committed


# --------------------------------------------------------------------------- examples
def test_empty_and_foreign_metadata_mean_nothing_known_with_a_reason_only_for_foreign() -> None:
    assert decode("", 10).progress is None and decode("", 10).problem is None
    assert decode(None, 10).problem is None
    foreign = decode("checkpoint=abc", 10)
    assert (
        foreign.progress is None and foreign.problem is not None and "not written by campus-bridge" in foreign.problem
    )
    newer = decode("v7:AAAA", 10)
    assert newer.progress is None and newer.problem is not None and "unknown version v7" in newer.problem
    corrupt = decode(PREFIX + "%%%", 10)
    assert corrupt.progress is None and corrupt.problem is not None and corrupt.problem.startswith("corrupt")
    assert (foreign.kind, newer.kind, corrupt.kind) == ("foreign", "unknown_version", "corrupt")


def test_metadata_for_another_offset_is_ignored() -> None:
    enc = encode(100, ((102, 110),), {}, BIG)
    assert decode(enc.metadata, 100).progress is not None
    moved = decode(enc.metadata, 90)  # e.g. the group's offsets were reset by an operator
    assert moved.progress is None and moved.problem is not None and "for offset 100" in moved.problem
    assert moved.kind == "other_offset"
    assert decode(enc.metadata, None).progress is None


def test_a_full_default_window_with_a_random_pattern_fits_the_default_budget() -> None:
    rng = random.Random(14)
    base = 5_000_000
    finished = to_ranges(sorted(base + i for i in range(1, 10_000) if rng.random() < 0.5))
    enc = encode(base, finished, {}, DEFAULT_BUDGET)
    assert not enc.overflow, len(enc.metadata)
    assert len(enc.metadata) < 2_000  # the bitmap: ~1,250 bytes before base64


def test_long_runs_use_run_lengths_and_stay_tiny() -> None:
    enc = encode(7, ((9, 1_000_009), (2_000_000, 2_000_001)), {}, DEFAULT_BUDGET)
    assert len(enc.metadata) < 40
    got = decode(enc.metadata, 7).progress
    assert got is not None and got.finished_count() == 1_000_001 and got.end == 2_000_001


def test_overflow_drops_partial_fanouts_before_finished_offsets() -> None:
    base = 0
    finished = ((5, 6), (9, 10))
    rng = random.Random(3)
    partial = {
        o: Partial(o, 600, to_ranges(sorted(rng.sample(range(600), 300)))) for o in range(100, 140)
    }  # ~40 x 75 bytes of incompressible bitmaps
    enc = encode(base, finished, partial, 600)
    assert enc.overflow and len(enc.metadata) <= 600
    got = decode(enc.metadata, base).progress
    assert got is not None
    assert offsets_of(got) == {5, 9}
    assert 0 < len(got.partial) < len(partial)
    assert sorted(got.partial) == sorted(partial)[: len(got.partial)]  # lowest offsets kept


def test_a_budget_too_small_for_anything_commits_the_offset_alone() -> None:
    enc = encode(0, ((3, 4),), {}, 5)
    assert enc.metadata == "" and enc.overflow


def test_done_indices_need_the_same_mapping() -> None:
    digest = items_digest(["k0", "k1", "k2"])
    progress = Progress(0, (), {4: Partial(digest, 3, ((0, 2),))})
    assert progress.done_indices(4, digest, 3) == {0, 1}
    assert progress.done_indices(4, items_digest(["k0", "k1", "other"]), 3) == frozenset()
    assert progress.done_indices(4, digest, 4) == frozenset()
    assert progress.done_indices(5, digest, 3) == frozenset()


def test_union_merges_overlapping_and_adjacent_ranges() -> None:
    assert union([(1, 3), (7, 9)], [(3, 5), (8, 12), (20, 21)]) == ((1, 5), (7, 12), (20, 21))
    assert to_ranges([1, 2, 2, 3, 7]) == ((1, 4), (7, 8))


# --------------------------------------------------------------------------- commit requests
def window_with(offsets: list[int], committed: int | None = None, metadata: str = "") -> PartitionOffsets:
    w = PartitionOffsets(100, committed, metadata)
    for o in offsets:
        w.track(o, 1)
    return w


def test_commit_request_carries_finished_records_above_the_prefix_and_only_when_something_changed() -> None:
    w = window_with([10, 11, 12, 13], committed=10)
    assert commit_request(w, None, BIG) is None  # nothing finished yet: the broker has the same picture
    w.complete(12)
    req = commit_request(w, None, BIG)
    assert req is not None and req.offset == 10
    progress = decode(req.metadata, 10).progress
    assert progress is not None and offsets_of(progress) == {12}
    w.mark_committed(req.offset, req.metadata, req.changes)
    assert commit_request(w, None, BIG) is None
    w.complete(10)
    req = commit_request(w, None, BIG)
    assert req is not None and req.offset == 11
    progress = decode(req.metadata, 11).progress
    assert progress is not None and offsets_of(progress) == {12}


def test_commit_request_with_a_zero_budget_is_the_plain_prefix_commit() -> None:
    w = window_with([0, 1, 2])
    w.complete(2)
    req = commit_request(w, None, 0)
    assert req is not None and req.offset == 0 and req.metadata == "" and req.overflow


def test_commit_request_keeps_restored_knowledge_of_records_not_fetched_again_yet() -> None:
    digest = items_digest(["a", "b", "c"])
    restored = Progress(50, ((52, 55), (60, 61)), {70: Partial(digest, 3, ((1, 2),))})
    w = window_with([50, 51], committed=50, metadata="old")
    w.track(52, 0)  # skipped: the metadata said finished
    w.complete(51)
    req = commit_request(w, restored, BIG)
    assert req is not None and req.offset == 50
    progress = decode(req.metadata, 50).progress
    assert progress is not None
    assert offsets_of(progress) == {51, 52, 53, 54, 60}
    assert dict(progress.partial) == {70: Partial(digest, 3, ((1, 2),))}


def test_commit_request_records_fanout_indices_of_partly_done_records() -> None:
    w = PartitionOffsets(100, 0)
    w.track(0, 3, digest=99, items=3)
    w.track(1, 2, digest=98, items=4, done=frozenset({0, 3}))  # two known final at the start
    w.complete(0, 1, index=2)
    w.complete(1, 1, index=1)
    req = commit_request(w, None, BIG)
    assert req is not None and req.offset == 0
    progress = decode(req.metadata, 0).progress
    assert progress is not None
    # the record holding the prefix back is the one whose fan-out matters most: it is kept too
    assert dict(progress.partial) == {0: Partial(99, 3, ((2, 3),)), 1: Partial(98, 4, ((0, 2), (3, 4)))}
    w.complete(0, 1, index=0)
    w.complete(0, 1, index=1)
    req = commit_request(w, None, BIG)
    assert req is not None and req.offset == 1
    progress = decode(req.metadata, 1).progress
    assert progress is not None and dict(progress.partial) == {1: Partial(98, 4, ((0, 2), (3, 4)))}


@pytest.mark.parametrize("committed", [None, 0])
def test_snapshot_lists_finished_records_behind_the_first_unfinished(committed: int | None) -> None:
    w = window_with([0, 1, 2, 3], committed=committed)
    w.complete(1)
    w.complete(3)
    snap = w.snapshot()
    assert snap.finished == [1, 3] and snap.partial == {} and snap.tracked_upto == 4
