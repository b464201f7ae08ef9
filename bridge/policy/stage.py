"""The policy stage: between the pipeline and delivery, each message of a rule with policies is decided on.

    pipeline ── submit(work) ──► worker (one per recipient hash: a recipient's messages keep their order)
                                   │ decide (pure; with the state store for limit, dedupe, digest)
          send ──────────────────► engine.submit(job)                      final when delivered / dead-lettered
          drop (duplicate, quiet, over the cap) ─► final at once, counted  (`dropped_by_policy`)
          defer / fold ──────────► deferred topic (acks=all) ─► final once written
                                     (too large even without the event ─► dead letter `deferral_too_large`)

Nothing here holds a source offset for long: a deferred message or a digest item is final for its source
record as soon as the deferred topic has it (`bridge.policy.deferred_pipeline` delivers it when due). While a
write is under way it counts as a call in flight of its partition, so a revoke waits for it. Work of a revoked
partition still queued is forgotten (not committed: the partition's new owner decides again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.logs import mask_phone
from bridge.metrics import Metrics
from bridge.models import Mapped, RecordMeta
from bridge.policy.decide import Decision, decide, subject_of
from bridge.policy.deferred import DeferralRefused, DeferredRecord
from bridge.policy.store import PolicyStore
from bridge.rules.policies import RulePolicy
from bridge.work import DeadLetter, Job, RecordRef

log = logging.getLogger("bridge.policy")

WORKERS = 8


class DeferredPort(Protocol):
    """What the stage needs of the deferred topic's writer."""

    async def publish(self, record: DeferredRecord) -> None:
        """Write the record; retry until acknowledged. DeferralRefused when it can never fit."""
        ...


class EnginePort(Protocol):
    """What the stage needs of the delivery engine."""

    def submit(self, job: Job) -> None:
        """Accept a job."""
        ...

    def dead_letter(self, letter: DeadLetter) -> None:
        """Write a dead letter in the background."""
        ...


@dataclass(slots=True)
class PolicyWork:
    """One message of a rule with policies, with what a decision and a digest need to know about it."""

    policy: RulePolicy
    item: Mapped
    ref: RecordRef
    key: Hashable | None  # ordering key for delivery
    index: int
    ctx: dict[str, Any]  # the rule's template context (event, kafka, headers)
    meta: RecordMeta  # the record's coordinates as the rules saw them (a replay's: the original ones)


class PolicyStage:
    """Decides on policy work in the background; see the module docstring."""

    def __init__(
        self,
        *,
        store: PolicyStore,
        engine: EnginePort,
        deferred: DeferredPort | None,
        metrics: Metrics,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        workers: int = WORKERS,
    ) -> None:
        self._store = store
        self._engine = engine
        self._deferred = deferred
        self._m = metrics
        self._wall_ms = wall_ms
        self._queues: list[asyncio.Queue[PolicyWork]] = [asyncio.Queue() for _ in range(workers)]
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self.pending = 0  # accepted and not yet handed to the engine or final
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Connect the store and start the workers (once)."""
        if self._tasks:
            return
        await self._store.start()
        self._tasks = [asyncio.create_task(self._worker(q), name=f"policy-{i}") for i, q in enumerate(self._queues)]

    async def stop(self, timeout: float) -> bool:
        """Let accepted work finish within `timeout` (decisions, deferred writes), then cancel; True if all did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        clean = self.pending == 0
        tasks = [*self._tasks, *self._writes]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._store.close()
        return clean

    def submit(self, work: PolicyWork) -> None:
        """Accept one message (non-blocking); its record must already be tracked in its partition's offsets."""
        self.pending += 1
        self._idle.clear()
        recipient = work.item.message.recipient
        self._queues[hash(recipient) % len(self._queues)].put_nowait(work)

    def _done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._idle.set()

    async def _worker(self, queue: asyncio.Queue[PolicyWork]) -> None:
        while True:
            work = await queue.get()
            if _revoked(work):
                self._done()  # not committed: the partition's new owner decides again
                continue
            try:
                decision = await self._decide(work)
            except Exception:  # a bug of ours must not stall the partition: deliver as if no policy applied
                log.exception("policy decision failed; sending the message", extra={"ctx": _ctx(work)})
                decision = Decision("send")
            if _revoked(work):  # revoked while Redis answered: the new owner decides again
                self._done()
                continue
            self._act(work, decision)

    async def _decide(self, work: PolicyWork) -> Decision:
        policy = work.policy
        subject = subject_of(policy, work.item.rule, work.item.message, work.ctx)
        if policy.dedupe is not None and subject.dedupe_key is None:
            self._m.policy_step(work.item.rule, "dedupe", "no_key")
            log.warning(
                "dedupe key rendered null or failed: the message is not de-duplicated", extra={"ctx": _ctx(work)}
            )
        now = self._wall_ms()
        if policy.stateful:
            return await self._store.decide(policy, subject, now)
        return decide(policy, {}, subject, now)[1]

    def _act(self, work: PolicyWork, decision: Decision) -> None:
        rule = work.item.rule
        for policy, action in decision.steps:
            self._m.policy_step(rule, policy, action)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "policy decision",
                extra={
                    "ctx": _ctx(
                        work,
                        action=decision.action,
                        by=decision.by,
                        until_ms=decision.until_ms,
                        window=decision.window,
                        steps=[f"{p}:{a}" for p, a in decision.steps],
                    )
                },
            )
        if decision.action == "send":
            self._engine.submit(Job(rule, work.item.message, work.ref, work.key, work.index))
            self._done()
        elif decision.action == "drop":
            work.ref.complete(work.index)
            self._m.message_final(rule, "dropped_by_policy")
            self._done()
        else:
            self._defer(work, decision)

    def _defer(self, work: PolicyWork, decision: Decision) -> None:
        meta = work.meta
        assert decision.until_ms is not None
        assert decision.by is not None
        folded = decision.action == "fold"
        record = DeferredRecord(
            kind="digest" if folded else "message",
            rule=work.item.rule,
            policy=decision.by,
            due_ms=decision.until_ms,
            message=work.item.message,
            origin=f"{meta.topic}/{meta.partition}/{meta.offset}/{meta.timestamp_ms}",
            window=decision.window,
            context={"event": work.ctx.get("event"), "kafka": _kafka(meta)} if folded else None,
        )
        work.ref.part.in_flight += 1
        task = asyncio.create_task(self._write(work, record), name="deferred-write")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, work: PolicyWork, record: DeferredRecord) -> None:
        try:
            if self._deferred is None:  # load refuses deferring rules without kafka.deferred_topic
                raise DeferralRefused("no kafka.deferred_topic")
            await self._deferred.publish(record)
        except DeferralRefused as exc:
            message = work.item.message
            self._engine.dead_letter(
                DeadLetter(
                    work.ref,
                    "deferral_too_large",
                    f"the deferred topic refused the {record.kind} record: {exc}",
                    rule=work.item.rule,
                    msg_key=message.msg_key,
                    payload=message.to_json(),
                    index=work.index,
                )
            )
        else:
            work.ref.complete(work.index)
        finally:
            work.ref.part.in_flight -= 1
        self._done()


def _revoked(work: PolicyWork) -> bool:
    return work.ref.part.revoked


def _kafka(meta: RecordMeta) -> dict[str, Any]:
    return {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset, "timestamp_ms": meta.timestamp_ms}


def _ctx(work: PolicyWork, **more: object) -> dict[str, object]:
    meta = work.ref.meta
    out: dict[str, object] = {
        "topic": meta.topic,
        "partition": meta.partition,
        "offset": meta.offset,
        "rule": work.item.rule,
        "msg_key": work.item.message.msg_key,
        "recipient": mask_phone(work.item.message.mobile_receiver),
    }
    out.update(more)
    return out
