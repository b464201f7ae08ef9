"""The deferred topic's pipeline: each record held until it is due, then handed to delivery; digests close here.

    deferred topic ── KafkaSource (its own group) ── take(part, meta, value) ──► waiting (a heap by due time)
        finished before (commit metadata) ─► skipped          unreadable ─► dead letter `invalid_deferred`
    due ─► a deferred message ─────────────────────────────► engine (its msg_key as the rule rendered it)
        ─► the items of one digest window (this partition) ─► one summary (one item: itself) ─► engine
           (no digest on the rule any more, or the summary does not render: each item on its own)

Records are read ahead and wait in memory: a partition holds at most `kafka.max_pending_per_partition`
unfinished records, then it is paused until the ones in hand come due and are delivered. A record is finished
(and its offset committable) when its message — or the summary that carries it — is delivered or dead-lettered.
Digest items are released `DIGEST_GRACE_SECONDS` after their window's due time, so the items written just
before it are in hand; an item read later (a lagging consumer) goes out in a summary of its own.

Revoked partitions: their waiting records are dropped (not committed; the new owner reads them again).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from bridge.metrics import Metrics
from bridge.models import RecordMeta
from bridge.pipeline import EnginePort
from bridge.policy.deferred import DeferredRecord, decode
from bridge.policy.digest import summarize
from bridge.rules import RuleSet
from bridge.rules.coerce import RenderError
from bridge.settings import Settings
from bridge.work import DeadLetter, Job, PartitionState, RecordRef

log = logging.getLogger("bridge.deferred")

DIGEST_GRACE_SECONDS = 2.0
MAX_SLEEP_SECONDS = 1.0  # the due-time loop looks at least this often (a clock step, a new head)


@dataclass(slots=True, eq=False)
class DigestRef(RecordRef):
    """The record a digest summary is accounted to: finishing it finishes every folded item's record."""

    members: list[RecordRef] = field(default_factory=list)

    def complete(self, index: int | None = None) -> None:
        """The summary is final: so is every item it carries."""
        for member in self.members:
            member.complete(0)


@dataclass(slots=True, eq=False)
class _Waiting:
    ref: RecordRef
    record: DeferredRecord


class DeferredPipeline:
    """Holds deferred records until due and delivers them; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        rules: Callable[[], RuleSet],
        engine: EnginePort,
        metrics: Metrics,
        *,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._rules = rules
        self._engine = engine
        self._m = metrics
        self._wall_ms = wall_ms
        self._ordered = settings.delivery.ordering != "none"
        self._heap: list[tuple[int, int, _Waiting]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._skipped = metrics.records_skipped.labels("already_finished")
        metrics.deferred_waiting.set_function(lambda: len(self._heap))
        metrics.deferred_overdue.set_function(self.overdue_seconds)

    # ----------------------------------------------------------------- what the KafkaSource needs
    @property
    def unfinished(self) -> int:
        """Work handed to delivery and not yet final (back-pressure; waiting records are bounded per partition)."""
        return self._engine.unfinished

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        """Wait until no call for these partitions is in flight (on revoke); False on timeout."""
        return await self._engine.wait_partitions_quiet(parts, timeout)

    async def wait_drained_to(self, n: int, timeout: float) -> bool:
        """Wait until at most `n` messages and dead letters are unfinished (the source at its cap); False on timeout."""
        return await self._engine.wait_drained_to(n, timeout)

    def take(self, part: PartitionState, meta: RecordMeta, value: bytes | None) -> None:
        """One record of the deferred topic, in fetch order: track it, and wait for its due time."""
        if part.first_offset is None:
            part.first_offset = meta.offset
        restored = part.restored
        if restored is not None:
            if meta.offset >= restored.end:
                part.restored = None
            elif restored.is_finished(meta.offset):
                part.offsets.track(meta.offset, 0, meta.timestamp_ms)
                self._skipped.inc()
                return
        part.offsets.track(meta.offset, 1, meta.timestamp_ms)
        decoded = decode(value)
        if isinstance(decoded, str):
            self._engine.dead_letter(DeadLetter(RecordRef(part, meta, value), "invalid_deferred", decoded))
            return
        # the engine measures lateness from the record's timestamp: for a deferred message, from its due time
        ref = RecordRef(part, RecordMeta(meta.topic, meta.partition, meta.offset, decoded.due_ms, meta.key), value)
        due = decoded.due_ms + (int(DIGEST_GRACE_SECONDS * 1000) if decoded.kind == "digest" else 0)
        heapq.heappush(self._heap, (due, next(self._seq), _Waiting(ref, decoded)))
        self._wake.set()

    # ----------------------------------------------------------------- the due-time loop
    def overdue_seconds(self) -> float:
        """How long the earliest waiting record has been due (0 when it is not yet)."""
        if not self._heap:
            return 0.0
        return max(0.0, (self._wall_ms() - self._heap[0][0]) / 1000.0)

    async def run(self) -> None:
        """Release whatever is due, then sleep until the next due time (or a new record); until cancelled."""
        while True:
            self._wake.clear()
            self.release_due()
            delay = MAX_SLEEP_SECONDS
            if self._heap:
                delay = min(delay, max(0.0, (self._heap[0][0] - self._wall_ms()) / 1000.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def release_due(self) -> int:
        """Hand every record due now to delivery; the number released."""
        now = self._wall_ms()
        heap = self._heap
        digests: dict[tuple[int, str], list[_Waiting]] = {}
        released = 0
        while heap and heap[0][0] <= now:
            _, _, waiting = heapq.heappop(heap)
            if waiting.ref.part.revoked:
                continue
            released += 1
            record = waiting.record
            if record.kind == "digest" and record.window is not None:
                digests.setdefault((id(waiting.ref.part), record.window), []).append(waiting)
            else:
                self._send(waiting.ref, record)
        for group in digests.values():
            self._send_digest(group)
        return released

    def _key(self, record: DeferredRecord) -> Hashable | None:
        return record.message.recipient if self._ordered else None

    def _send(self, ref: RecordRef, record: DeferredRecord) -> None:
        self._engine.submit(Job(record.rule, record.message, ref, self._key(record), 0))

    def _send_digest(self, group: list[_Waiting]) -> None:
        first = group[0].record
        rule_id, window = first.rule, first.window or ""
        items: dict[str, _Waiting] = {}
        for waiting in group:  # a record written twice (a retried write) folds once
            items.setdefault(waiting.record.message.msg_key, waiting)
        if len(items) == 1:
            self._m.policy_step(rule_id, "digest", "single")
            self._send(self._carrier(group), first)
            return
        rule = self._rules().get(rule_id)
        digest = rule.policy.digest if rule is not None and rule.policy is not None else None
        reason = f"rule {rule_id} has no digest any more"
        if digest is not None:
            try:
                summary = summarize(
                    rule_id, digest, window, [(w.record.message, w.record.context) for w in items.values()]
                )
            except RenderError as exc:
                reason = f"{exc.field or 'digest.message'}: {exc.reason}"
            else:
                self._m.policy_step(rule_id, "digest", "summary")
                self._engine.submit(Job(rule_id, summary, self._carrier(group), self._key(first), 0))
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("digest due", extra={"ctx": {"rule": rule_id, "window": window, "count": len(items)}})
                return
        self._m.policy_step(rule_id, "digest", "fallback")
        log.warning(
            "digest summary not made: its messages are sent one by one",
            extra={"ctx": {"rule": rule_id, "window": window, "count": len(items), "error": reason}},
        )
        for waiting in group:
            self._send(waiting.ref, waiting.record)

    @staticmethod
    def _carrier(group: list[_Waiting]) -> RecordRef:
        if len(group) == 1:
            return group[0].ref
        head = group[0].ref
        return DigestRef(head.part, head.meta, head.value, [w.ref for w in group])
