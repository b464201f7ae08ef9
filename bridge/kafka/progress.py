"""Commit metadata: which records above the committed offset are already finished. Pure encoder and decoder.

A Kafka commit carries an offset and a metadata string (at most the broker's `offset.metadata.max.bytes`,
4096 by default). The offset stays what it always was: the contiguous prefix of finished records. The
metadata says what is known beyond it, so a restart, a rebalance or another instance skips those records
instead of sending their messages again (the idea of Confluent's Parallel Consumer):

    v1:<urlsafe base64, no padding, of zlib(payload)>

    payload   = varint base                       the committed offset the rest is relative to
                bits(finished)                    position p = record at offset base + p is finished
                varint n, n × partial             fan-out records with some (not all) messages final
    partial   = varint (offset - base), varint digest, varint items, bits(done indices)
    bits      = 0x00 varint n, n × varint run     run lengths, alternating unset / set, starting unset
              | 0x01 varint nbits, bitmap         little-endian bitmap
                (whichever is smaller; trailing unset positions are never written)

`digest` (CRC-32 of the record's mapped items, see `items_digest`) ties a partial record's element indices
to the mapping that produced them: if the rules map the record differently after a restart, the indices
mean nothing and are ignored (everything of that record is sent again). Offsets between finished records
that never arrive as records (compaction, transaction markers) may be marked finished: harmless.

When the whole picture does not fit the byte budget, the encoder keeps what fits — partial records first go,
then finished offsets from the top — and says so (`Encoded.overflow`); with nothing fitting, the metadata
is empty (the prefix alone, as without this feature). Everything kept is true, so a truncated picture only
means more re-sending after a restart, never a skipped message that was not final.

The decoder never raises: an empty string, another writer's metadata, an unknown version, corrupt data or a
base that is not the committed offset all decode to "nothing known" (with the reason, for one log line).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bridge.kafka.offsets import PartitionOffsets

PREFIX = "v1:"
DEFAULT_BUDGET = 4000  # bytes; the broker's offset.metadata.max.bytes defaults to 4096
MAX_PAYLOAD = 256 * 1024  # decompressed bytes the decoder accepts (garbage must not eat memory or time)
_VERSION_RE = re.compile(r"^v(\d+):")

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent [start, end) intervals


# ------------------------------------------------------------------------------------------ intervals
def to_ranges(values: Iterable[int]) -> Ranges:
    """Sorted integers (duplicates allowed) as [start, end) ranges."""
    out: list[tuple[int, int]] = []
    start = end = None
    for v in values:
        if end is not None and v <= end:
            if v == end:
                end += 1
            continue
        if start is not None and end is not None:
            out.append((start, end))
        start, end = v, v + 1
    if start is not None and end is not None:
        out.append((start, end))
    return tuple(out)


def union(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> Ranges:
    """The union of two range lists, normalised."""
    out: list[tuple[int, int]] = []
    for s, e in sorted((*a, *b)):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return tuple(out)


def clip(ranges: Sequence[tuple[int, int]], lo: int) -> Ranges:
    """The part of `ranges` at or above `lo`."""
    return tuple((max(s, lo), e) for s, e in ranges if e > lo)


def _contains(ranges: Ranges, starts: Sequence[int], value: int) -> bool:
    i = bisect.bisect_right(starts, value) - 1
    return i >= 0 and value < ranges[i][1]


# ------------------------------------------------------------------------------------------ model
@dataclass(frozen=True, slots=True)
class Partial:
    """A fan-out record with some of its messages final: `done` indices out of `items`, for mapping `digest`."""

    digest: int
    items: int
    done: Ranges


@dataclass(frozen=True, slots=True)
class Progress:
    """What a commit's metadata says about one partition above its committed offset `base`."""

    base: int
    finished: Ranges = ()  # absolute offsets
    partial: Mapping[int, Partial] = field(default_factory=dict)
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(s for s, _ in self.finished))

    @property
    def empty(self) -> bool:
        """Nothing is known beyond the base."""
        return not self.finished and not self.partial

    @property
    def end(self) -> int:
        """One past the highest offset this progress says anything about (`base` when empty)."""
        top = self.finished[-1][1] if self.finished else self.base
        return max(top, *(o + 1 for o in self.partial)) if self.partial else top

    def is_finished(self, offset: int) -> bool:
        """The record at `offset` was finished (all its messages final) when this was committed."""
        return _contains(self.finished, self._starts, offset)

    def done_indices(self, offset: int, digest: int, items: int) -> frozenset[int]:
        """Indices of the record's messages already final, if it maps to the same items again; else none."""
        p = self.partial.get(offset)
        if p is None or p.digest != digest or p.items != items:
            return frozenset()
        return frozenset(i for s, e in p.done for i in range(s, min(e, items)))

    def done_count(self, offset: int) -> int:
        """How many messages of the partly done record at `offset` are final (0 if none recorded)."""
        p = self.partial.get(offset)
        return 0 if p is None else sum(e - s for s, e in p.done)

    def finished_count(self) -> int:
        """How many offsets are marked finished."""
        return sum(e - s for s, e in self.finished)


def items_digest(tags: Iterable[str]) -> int:
    """CRC-32 of a record's mapped items in order (msg_key of a message, a tag of a mapping failure)."""
    return zlib.crc32("\x1f".join(tags).encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------------------------------ varints, bits
def _varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _put_bits(out: bytearray, ranges: Ranges, lo: int) -> None:
    """Positions `range - lo` as runs or a bitmap, whichever is smaller."""
    runs: list[int] = []
    pos = 0
    for s, e in ranges:
        runs.append(s - lo - pos)
        runs.append(e - s)
        pos = e - lo
    nbits = pos
    runs_size = _varint_size(len(runs)) + sum(_varint_size(r) for r in runs)
    map_size = _varint_size(nbits) + (nbits + 7) // 8
    if runs_size <= map_size:
        out.append(0)
        _varint(out, len(runs))
        for r in runs:
            _varint(out, r)
        return
    bits = 0
    for s, e in ranges:
        bits |= ((1 << (e - s)) - 1) << (s - lo)
    out.append(1)
    _varint(out, nbits)
    out += bits.to_bytes((nbits + 7) // 8, "little")


class _Corrupt(ValueError):
    pass


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        n = shift = 0
        data = self.data
        while True:
            if self.pos >= len(data):
                raise _Corrupt("truncated")
            b = data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7
            if shift > 63:
                raise _Corrupt("varint too long")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Corrupt("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def bits(self, lo: int) -> Ranges:
        kind = self.take(1)[0]
        out: list[tuple[int, int]] = []
        if kind == 0:
            count = self.varint()
            if count > len(self.data):
                raise _Corrupt("run count beyond the data")
            pos = lo
            for i in range(count):
                run = self.varint()
                if i % 2 and run:
                    out.append((pos, pos + run))
                pos += run
            return union(out, ())
        if kind == 1:
            nbits = self.varint()
            raw = self.take((nbits + 7) // 8)
            for i, byte in enumerate(raw):
                for s, e in _BYTE_RUNS[byte]:
                    start, end = lo + i * 8 + s, lo + i * 8 + e
                    if out and out[-1][1] == start:
                        out[-1] = (out[-1][0], end)
                    else:
                        out.append((start, end))
            limit = lo + nbits
            return tuple((s, min(e, limit)) for s, e in out if s < limit)
        raise _Corrupt(f"unknown bit encoding {kind}")


def _byte_runs(b: int) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    for bit in range(8):
        if b >> bit & 1:
            if runs and runs[-1][1] == bit:
                runs[-1] = (runs[-1][0], bit + 1)
            else:
                runs.append((bit, bit + 1))
    return tuple(runs)


_BYTE_RUNS = tuple(_byte_runs(b) for b in range(256))


# ------------------------------------------------------------------------------------------ encode
@dataclass(frozen=True, slots=True)
class Encoded:
    """Commit metadata and whether something known had to be left out to fit the budget."""

    metadata: str
    overflow: bool


def _payload(base: int, finished: Ranges, partial: Sequence[tuple[int, Partial]]) -> str:
    out = bytearray()
    _varint(out, base)
    _put_bits(out, finished, base)
    _varint(out, len(partial))
    for offset, p in partial:
        _varint(out, offset - base)
        _varint(out, p.digest)
        _varint(out, p.items)
        _put_bits(out, p.done, 0)
    packed = zlib.compress(bytes(out), 9)
    return PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def encode(base: int, finished: Ranges, partial: Mapping[int, Partial], budget: int) -> Encoded:
    """Metadata for a commit of `base`: finished offsets (> base) and partial records, within `budget` bytes.

    Finished ranges at or below `base` and partial records below it are dropped. Empty metadata when nothing
    is known, or when not even the smallest non-empty picture fits (then `overflow` is set).
    """
    finished = clip(finished, base + 1)
    parts = sorted((o, p) for o, p in partial.items() if o >= base and p.done)
    if not finished and not parts:
        return Encoded("", False)
    full = _payload(base, finished, parts)
    if len(full) <= budget:
        return Encoded(full, False)
    # Too big: keep the finished offsets and as many partial records (lowest offsets first) as fit ...
    if len(_payload(base, finished, ())) <= budget:
        keep = _fit(len(parts), lambda n: _payload(base, finished, parts[:n]), budget)
        return Encoded(_payload(base, finished, parts[:keep]), True)
    # ... or else as many finished ranges (lowest first) as fit, no partial records.
    keep = _fit(len(finished), lambda n: _payload(base, finished[:n], ()), budget)
    return Encoded(_payload(base, finished[:keep], ()) if keep else "", True)


def _fit(n: int, render: Callable[[int], str], budget: int) -> int:
    """The largest k in 1..n-1 with len(render(k)) <= budget (render(n) does not fit), else 0."""
    lo, hi = 0, n - 1
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if mid == 0 or len(render(mid)) <= budget:
            best = mid
            lo = mid + 1
        else:
            hi = mid - 1
    return best


# ------------------------------------------------------------------------------------------ decode
@dataclass(frozen=True, slots=True)
class Decoded:
    """The progress read from commit metadata, or None with the reason (None too for empty metadata).

    `kind` names the class of problem for log de-duplication: `corrupt`, `unknown_version`, `foreign`,
    `other_offset`.
    """

    progress: Progress | None
    problem: str | None = None
    kind: str | None = None


def decode(metadata: str | None, committed: int | None) -> Decoded:
    """Read commit metadata written by `encode` for the committed offset `committed`. Never raises."""
    if not metadata:
        return Decoded(None)
    try:
        return _decode(metadata, committed)
    except (_Corrupt, ValueError, zlib.error, binascii.Error, OverflowError, MemoryError) as exc:
        return Decoded(None, f"corrupt commit metadata ({type(exc).__name__}: {exc})", "corrupt")


def _decode(metadata: str, committed: int | None) -> Decoded:
    if not metadata.startswith(PREFIX):
        m = _VERSION_RE.match(metadata)
        if m is not None:
            return Decoded(None, f"commit metadata of unknown version v{m.group(1)} (newer bridge?)", "unknown_version")
        return Decoded(None, "commit metadata not written by campus-bridge", "foreign")
    text = metadata[len(PREFIX) :]
    if not text.isascii():
        raise _Corrupt("not base64")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    inflater = zlib.decompressobj()
    data = inflater.decompress(raw, MAX_PAYLOAD)
    if inflater.unconsumed_tail or not inflater.eof:
        raise _Corrupt("payload too large or truncated")
    r = _Reader(data)
    base = r.varint()
    if committed is None or base != committed:
        return Decoded(
            None, f"commit metadata is for offset {base}, but the committed offset is {committed}", "other_offset"
        )
    finished = r.bits(base)
    partial: dict[int, Partial] = {}
    for _ in range(r.varint()):
        offset = base + r.varint()
        digest = r.varint()
        items = r.varint()
        done = r.bits(0)
        if done:
            partial[offset] = Partial(digest, items, done)
    if r.pos != len(data):
        raise _Corrupt("trailing bytes")
    return Decoded(Progress(base, finished, partial))


# ------------------------------------------------------------------------------------------ commits
@dataclass(frozen=True, slots=True)
class CommitRequest:
    """What to commit for one partition: the offset, its metadata, and the window's change count it reflects."""

    offset: int
    metadata: str
    overflow: bool
    changes: int


def commit_request(offsets: PartitionOffsets, restored: Progress | None, budget: int) -> CommitRequest | None:
    """The commit a partition needs now, or None when the broker already has the same picture.

    Combines what this process tracked (finished records above the prefix, partly done fan-outs) with what
    the metadata it started from said about records not fetched again yet (`restored`), so a second crash
    before those are reached does not forget them.
    """
    point = offsets.position
    if point is None:
        return None
    committed = offsets.committed
    if committed is not None and point < committed:
        return None
    if point == committed and offsets.changes == offsets.committed_changes:
        return None
    snap = offsets.snapshot()
    finished = to_ranges(snap.finished)
    partial = {o: Partial(d, n, to_ranges(sorted(done))) for o, (d, n, done) in snap.partial.items()}
    if restored is not None and restored.end > snap.tracked_upto:
        finished = union(finished, clip(restored.finished, snap.tracked_upto))
        for o, p in restored.partial.items():
            if o >= snap.tracked_upto:
                partial[o] = p
    enc = encode(point, finished, partial, budget)
    if point == committed and enc.metadata == offsets.committed_metadata:
        offsets.mark_committed(point, enc.metadata, offsets.changes)  # same picture: nothing to send
        return None
    return CommitRequest(point, enc.metadata, enc.overflow, offsets.changes)
