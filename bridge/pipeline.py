"""The pipeline: one fetched record in → decoded, mapped jobs (or dead letters) out; its offset tracked.

    source (Kafka consumer; later the deferred topic) ── take(part, meta, value) ──►
        finished before (commit metadata) ─────────────► skipped (counted), finished at once
        decode ─► invalid ─────────────────────────────► dead letter (reason), offset waits for it
        map ────► no rule / replayed for another rule ─► finished at once (counted)
              ├─► stale ───────────────────────────────► skipped (counted), finished at once
              ├─► MappingFailure ──────────────────────► dead letter (mapping_error)
              └─► Mapped ──────────────────────────────► Job ─► engine.submit()
                    (a fan-out element final before a restart, same mapping: skipped, counted)
                    (its rule has policies: ─► the policy stage, `bridge.policy.stage`, decides first)

The pipeline knows nothing of Kafka clients: a source hands it records with their partition state, and asks
it for back-pressure (`unfinished`) and for draining on revoke (`wait_partitions_quiet`). The rules can be
swapped between two records (`swap_rules`, the SIGHUP reload): a record is mapped wholly by one rule set.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Hashable
from typing import Protocol

from bridge.kafka.codec import Invalid, decode_value
from bridge.kafka.progress import items_digest
from bridge.metrics import Metrics
from bridge.models import Mapped, MappingFailure, RecordMeta
from bridge.policy.stage import PolicyWork
from bridge.rules import RuleSet
from bridge.settings import Settings
from bridge.work import DeadLetter, Job, PartitionState, RecordRef

log = logging.getLogger("bridge.pipeline")

REPLAY_ORIGIN = "bridge.replay.origin"  # "topic/partition/offset/timestamp_ms" of the dead-lettered record
REPLAY_RULE = "bridge.replay.rule"  # only this rule applies to a replayed record


class EnginePort(Protocol):
    """What the pipeline needs of the delivery engine."""

    unfinished: int

    def submit(self, job: Job) -> None:
        """Accept a job (non-blocking)."""
        ...

    def dead_letter(self, letter: DeadLetter) -> None:
        """Write a dead letter in the background; the record's offset waits for it."""
        ...

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        """Wait until no call for these partitions is in flight; False on timeout."""
        ...

    async def wait_drained_to(self, n: int, timeout: float) -> bool:
        """Wait until at most `n` jobs and dead letters are unfinished; False on timeout."""
        ...


class PolicyPort(Protocol):
    """What the pipeline needs of the policy stage (`bridge.policy.stage.PolicyStage`)."""

    pending: int

    def submit(self, work: PolicyWork) -> None:
        """Accept a message of a rule with policies (non-blocking)."""
        ...


class Pipeline:
    """Turns fetched records into delivery jobs and keeps each partition's commit bookkeeping."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        engine: EnginePort,
        metrics: Metrics,
        *,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        policies: PolicyPort | None = None,
    ) -> None:
        self._max_record_bytes = settings.kafka.max_record_bytes
        self._policies = policies
        _check_policies(rules, policies)
        self._rules = rules
        self._engine = engine
        self._m = metrics
        self._wall_ms = wall_ms
        order = settings.delivery.ordering
        self._key: Callable[[Mapped, RecordMeta], Hashable | None]
        if order == "recipient":
            self._key = lambda m, meta: m.message.recipient
        elif order == "partition":
            self._key = lambda m, meta: (meta.topic, meta.partition)
        else:
            self._key = lambda m, meta: None
        stale = settings.delivery.skip_older_than_seconds
        self._stale_ms = int(stale * 1000) if stale else None
        self._skipped_records = metrics.records_skipped.labels("already_finished")
        self._skipped_messages = metrics.messages_skipped.labels("already_finished")

    # ----------------------------------------------------------------- rules
    @property
    def rules(self) -> RuleSet:
        """The rule set records are mapped with now."""
        return self._rules

    def swap_rules(self, rules: RuleSet) -> None:
        """Map every record taken from now on with `rules` (jobs already submitted keep their messages)."""
        _check_policies(rules, self._policies)
        self._rules = rules
        self._m.prime(rules.ids)
        self._m.prime_policies(rules.policies)

    # ----------------------------------------------------------------- engine view for sources
    @property
    def unfinished(self) -> int:
        """Messages and dead letters accepted and not yet final (back-pressure for sources)."""
        if self._policies is not None:
            return self._engine.unfinished + self._policies.pending
        return self._engine.unfinished

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        """Wait until no call for these partitions is in flight (on revoke); False on timeout."""
        return await self._engine.wait_partitions_quiet(parts, timeout)

    async def wait_drained_to(self, n: int, timeout: float) -> bool:
        """Wait until at most `n` messages and dead letters are unfinished; False on timeout."""
        return await self._engine.wait_drained_to(n, timeout)

    # ----------------------------------------------------------------- records
    def take(self, part: PartitionState, meta: RecordMeta, value: bytes | None) -> None:
        """One fetched record of `part`, in fetch order: track its offset and hand its work on."""
        if part.first_offset is None:
            part.first_offset = meta.offset
        offsets = part.offsets
        restored = part.restored
        if restored is not None:
            if meta.offset >= restored.end:
                part.restored = restored = None  # fetching has passed everything it knew
            elif restored.is_finished(meta.offset):
                offsets.track(meta.offset, 0, meta.timestamp_ms)
                self._skipped_records.inc()
                return
        ref = RecordRef(part, meta, value)
        decoded = decode_value(value, self._max_record_bytes)
        if isinstance(decoded, Invalid):
            offsets.track(meta.offset, 1, meta.timestamp_ms)
            self._m.records_invalid.labels(decoded.reason.value).inc()
            self._engine.dead_letter(DeadLetter(ref, decoded.reason.value, decoded.detail))
            return
        map_meta, only_rule = replay_meta(meta)
        result = self._rules.map(decoded, map_meta)
        for rule in result.matched:
            self._m.rule_matched(rule)
        for rule in result.empty_fanout:
            self._m.fanout_empty.labels(rule).inc()
        for rule, field in result.missing:
            self._m.template_missing(rule, field)
        items = result.items
        if only_rule is not None:
            items = tuple(i for i in items if i.rule == only_rule)
        if not items:
            if result.unmatched:
                self._m.events_unmatched.labels(meta.topic).inc()
            offsets.track(meta.offset, 0, meta.timestamp_ms)
            return
        if self._stale_ms is not None and self._wall_ms() - meta.timestamp_ms > self._stale_ms:
            for item in items:
                self._m.message_final(item.rule, "skipped_stale")
            offsets.track(meta.offset, 0, meta.timestamp_ms)
            log.info(
                "skipped stale event",
                extra={"ctx": {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}},
            )
            return
        done: frozenset[int] = frozenset()
        if len(items) > 1:
            digest = items_digest(map(_item_tag, items))
            if restored is not None:
                done = restored.done_indices(meta.offset, digest, len(items))
                if done:
                    self._skipped_messages.inc(len(done))
            offsets.track(
                meta.offset, len(items) - len(done), meta.timestamp_ms, digest=digest, items=len(items), done=done
            )
        else:
            offsets.track(meta.offset, len(items), meta.timestamp_ms)
        key_of = self._key
        policies = self._rules.policies
        ctx = None
        for index, item in enumerate(items):
            if index in done:
                continue
            if isinstance(item, Mapped):
                policy = policies.get(item.rule) if policies else None
                if policy is None:
                    self._engine.submit(Job(item.rule, item.message, ref, key_of(item, meta), index))
                    continue
                if ctx is None:  # what the policies' templates see (dedupe key) and a digest keeps
                    ctx = self._rules.context(decoded, map_meta)
                assert self._policies is not None  # checked when the rules were set
                self._policies.submit(PolicyWork(policy, item, ref, key_of(item, meta), index, ctx, map_meta))
            else:
                self._m.mapping_errors.labels(item.rule, item.field).inc()
                self._engine.dead_letter(
                    DeadLetter(
                        ref,
                        "mapping_error",
                        f"rule {item.rule}: {item.field}: {item.reason}",
                        rule=item.rule,
                        field=item.field,
                        index=index,
                    )
                )


def _check_policies(rules: RuleSet, stage: PolicyPort | None) -> None:
    if rules.policies and stage is None:
        raise ValueError(f"rules with policies ({', '.join(rules.policies)}) need a policy stage")


def _item_tag(item: Mapped | MappingFailure) -> str:
    """What identifies one mapped item across a restart: its msg_key, or the rule and field that failed."""
    if isinstance(item, Mapped):
        return item.message.msg_key
    return f"!{item.rule}/{item.field}"


_ORIGIN_RE = re.compile(r"^(.+)/(\d+)/(\d+)/(-?\d+)$")


def replay_meta(meta: RecordMeta) -> tuple[RecordMeta, str | None]:
    """For a record replayed from the DLQ: the original coordinates (same msg_keys) and the rule to apply."""
    if not meta.headers:
        return meta, None
    origin = rule = None
    for k, v in meta.headers:
        if k == REPLAY_ORIGIN:
            origin = v.decode("utf-8", "replace")
        elif k == REPLAY_RULE:
            rule = v.decode("utf-8", "replace") or None
    if origin is None:
        return meta, None
    m = _ORIGIN_RE.match(origin)
    if m is None:
        return meta, rule
    return (
        RecordMeta(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), meta.key, meta.headers),
        rule,
    )
