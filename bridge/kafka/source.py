"""The Kafka adapter of `bridge run`: consume in a group, hand records to the pipeline, commit safely.

Fetching is scoped per partition: a partition whose out-of-order window is full is paused alone; all are
paused while delivery is paused (systemic) or the engine holds too much. `getmany` keeps being called, so
group membership survives long pauses. Commits carry the contiguous prefix of finished records as the offset,
and in their metadata which records (and fan-out messages) above it are finished too (`bridge.kafka.progress`);
they run periodically, on revoke and on shutdown. On assignment that metadata is read back, so the pipeline
skips what was finished before a crash, a restart or a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from bridge.kafka.offsets import PartitionOffsets
from bridge.kafka.progress import CommitRequest, Progress, commit_request, decode
from bridge.metrics import Metrics
from bridge.models import RecordMeta
from bridge.settings import Settings
from bridge.work import PartitionState

from .client_options import connection_options
from .connect import connect_with_retry, describe_kafka_error

log = logging.getLogger("bridge.source")


class RecordSink(Protocol):
    """Where fetched records go (the pipeline): records in, back-pressure and drain signals out."""

    @property
    def unfinished(self) -> int:
        """Work accepted and not yet final, all partitions together."""
        ...

    def take(self, part: PartitionState, meta: RecordMeta, value: bytes | None) -> None:
        """One fetched record of `part`, in fetch order."""
        ...

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        """Wait until nothing of these partitions is in flight; False on timeout."""
        ...

    async def wait_drained_to(self, n: int, timeout: float) -> bool:
        """Wait until at most `n` items of work are unfinished; False on timeout."""
        ...


EARLY_COMMIT_GAP_SECONDS = 0.1  # `commit_every_messages` commits no more often than this
# ... nor more often than this many times the CPU time the last commit took to build (its metadata is O(window)):
# at most ~5 % of a core goes to early commits, however large the out-of-order window grows
EARLY_COMMIT_DUTY_FACTOR = 20
STOP_TICK_SECONDS = 0.2  # the commit loop's longest sleep, so it notices a stop soon
CLOSE_STEP_SECONDS = 10.0  # on close, the final commit and leaving the group each get this long
COMMITTER_STOP_SECONDS = 5.0  # on stop, how long a commit in progress may finish before it is cancelled
DRAIN_WAIT_SECONDS = 0.5  # at the cap: how long to wait for the engine to drain before pausing the partitions
YIELD_EVERY = 16  # records mapped between two yields to the event loop (~0.5 ms of work: the rate limiter's
# tolerance is `burst` slots, 4 ms at 5,000/s, and a longer loop iteration loses rate)
POSITION_WAIT_SECONDS = 15.0  # how long an assignment waits for the new partitions' fetch positions


async def fetch_committed(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, tuple[int, str]]:
    """The group's committed (offset, metadata) of `tps`, in one OffsetFetch request; absent = none committed.

    `AIOKafkaConsumer.committed()` drops the metadata (aiokafka issue #857), so this asks the consumer's group
    coordinator directly — the call `committed()` itself makes. tests/test_kafka_roundtrip.py pins it, so an
    aiokafka upgrade that moves it fails a test instead of silently re-sending after every restart.
    """
    if not tps:
        return {}
    found = await consumer._coordinator.fetch_committed_offsets(tps)
    return {tp: (int(om.offset), om.metadata or "") for tp, om in found.items() if om.offset >= 0}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource, consumer: AIOKafkaConsumer) -> None:
        self._source = source
        self._consumer = consumer  # the first assignment runs inside consumer.start(), before start() returns

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._source.on_assigned(assigned, self._consumer)


class KafkaSource:
    """Consumes the configured topics and feeds the pipeline.

    With `topic`, it consumes that one topic in group `group_id` from the earliest offset a new group finds
    instead: the deferred topic, whose every record must be read (`bridge.policy.deferred_pipeline`).
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: RecordSink,
        metrics: Metrics,
        *,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        topic: str | None = None,
        group_id: str | None = None,
    ) -> None:
        self._s = settings
        self._k = settings.kafka
        self._topic = topic
        self._group_id = group_id or settings.kafka.group_id
        self._pipeline = pipeline
        self._m = metrics
        self._wall_ms = wall_ms
        self._consumer: AIOKafkaConsumer | None = None
        self.parts: dict[TopicPartition, PartitionState] = {}
        self._stopping = False
        self._halted = False  # systemic pause: fetch nothing
        self._max_queued = max(settings.delivery.max_in_flight * 16, 4096)
        self._over_cap = False
        self.assigned_once = False
        self.kafka_error: str | None = None  # the last reason the brokers could not be reached
        self._last_broker_ok = time.monotonic()
        self._reported_unreachable = False
        self._metadata_problems: set[str] = set()  # kinds of unreadable commit metadata already logged
        self._commit_lock = asyncio.Lock()
        self._commit_build_seconds = 0.0  # CPU time the last commit took to build (paces early commits)

    # ----------------------------------------------------------------- lifecycle
    def _new_consumer(self) -> AIOKafkaConsumer:
        k = self._k
        return AIOKafkaConsumer(
            **connection_options(k),
            group_id=self._group_id,
            group_instance_id=k.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._topic is not None else k.auto_offset_reset,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            max_partition_fetch_bytes=max(k.max_record_bytes + 65536, 1_048_576),
            fetch_max_bytes=max(k.max_record_bytes * 4, 52_428_800),
            metadata_max_age_ms=30_000,
        )

    async def connect(self, stop: asyncio.Event) -> bool:
        """Connect to the brokers (retrying for as long as it takes) and subscribe; False if stopped first.

        The group is joined in the background after this returns: `assigned_once` tells when it happened.
        """
        k = self._k

        def failed(reason: str) -> None:
            self.kafka_error = reason

        consumer = await connect_with_retry(
            "consumer",
            self._new_consumer,
            lambda c: c.start(),
            lambda c: c.stop(),
            servers=k.bootstrap_servers,
            timeout=k.connect_timeout_seconds,
            stop=stop,
            on_error=failed,
        )
        if consumer is None:
            return False
        self.kafka_error = None
        self._last_broker_ok = time.monotonic()
        listener = _Listener(self, consumer)
        if self._topic is not None:
            consumer.subscribe(topics=[self._topic], listener=listener)
        elif k.topic_pattern:
            consumer.subscribe(pattern=k.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(k.topics), listener=listener)
        self._consumer = consumer
        return True

    @property
    def connected(self) -> bool:
        """The consumer is connected (it may still be joining the group)."""
        return self._consumer is not None

    def unreachable_for(self, now: float | None = None) -> float:
        """Seconds since the last successful broker round trip, when over `unreachable_after_seconds`; else 0."""
        if self._consumer is None:
            return 0.0
        now = time.monotonic() if now is None else now
        silent = now - self._last_broker_ok
        return silent if silent > self._k.unreachable_after_seconds else 0.0

    def _broker_answered(self) -> None:
        """A broker round trip succeeded (a fetch with records, or the watch's metadata probe)."""
        self._last_broker_ok = time.monotonic()
        if self._reported_unreachable:
            self._reported_unreachable = False
            log.info("kafka reachable again", extra={"ctx": {"bootstrap_servers": self._k.bootstrap_servers}})

    async def _watch_broker(self, consumer: AIOKafkaConsumer) -> None:
        """Probe the brokers with a metadata request now and then, so a frozen broker turns /readyz to 503."""
        k = self._k
        interval = max(1.0, min(5.0, k.unreachable_after_seconds / 3))
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await asyncio.wait_for(consumer._client.fetch_all_metadata(), interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.kafka_error = describe_kafka_error(exc, interval)
            else:
                self._broker_answered()
            silent = self.unreachable_for()
            if silent and not self._reported_unreachable:
                self._reported_unreachable = True
                log.warning(
                    "kafka unreachable: no broker answered; not ready (offsets held, nothing lost)",
                    extra={
                        "ctx": {
                            "bootstrap_servers": k.bootstrap_servers,
                            "silent_seconds": round(silent, 1),
                            "error": self.kafka_error,
                        }
                    },
                )

    def halt(self, reason: str | None) -> None:
        """Systemic pause on (reason) or off (None): fetch nothing while on, keep offsets where they are."""
        self._halted = reason is not None

    async def run(self) -> None:
        """Fetch until `stop_fetching()`; commit periodically; watch the brokers' health meanwhile."""
        consumer = self._consumer
        assert consumer is not None
        watch = asyncio.create_task(self._watch_broker(consumer), name="kafka-watch")
        committer = asyncio.create_task(self._commit_loop(consumer), name="kafka-commit")
        try:
            await self._fetch_loop(consumer)
        finally:
            self._stopping = True
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            # it sees `_stopping` within one tick and returns; a commit stuck on unreachable brokers is cancelled
            # after a bound (harmless: `close()` commits again), so a stop can never hang here
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(committer, COMMITTER_STOP_SECONDS)

    async def _commit_loop(self, consumer: AIOKafkaConsumer) -> None:
        """Commit every `commit_interval_seconds`, and early once `commit_every_messages` became final.

        Its own task, so a fetch loop waiting for the engine to drain never delays a commit.
        """
        interval = self._k.commit_interval_seconds
        every = self._k.commit_every_messages
        tick = min(interval, EARLY_COMMIT_GAP_SECONDS) if every else min(interval, STOP_TICK_SECONDS)
        next_commit = time.monotonic() + interval
        last_commit = 0.0
        while True:
            await asyncio.sleep(tick)
            if self._stopping:
                return
            now = time.monotonic()
            try:
                if now >= next_commit:
                    next_commit = now + interval
                    await self.commit(consumer)
                    self._publish_partition_metrics(consumer)
                elif (
                    every
                    and now - last_commit >= EARLY_COMMIT_DUTY_FACTOR * self._commit_build_seconds
                    and self.finished_since_commit() >= every
                ):
                    await self.commit(consumer)
                else:
                    continue
                last_commit = now
            except Exception:  # a bug here must not silently end committing: log it, try again next tick
                log.exception("commit loop error (will retry)")

    async def _fetch_loop(self, consumer: AIOKafkaConsumer) -> None:
        batch = self._k.fetch_max_records
        while not self._stopping:
            if not self._halted and self._pipeline.unfinished >= self._max_queued:
                # At the cap, wait for the engine to drain to half rather than pause every partition: aiokafka
                # drops the records it prefetched for a partition when it is paused, so each pause cost a
                # refetch. Bounded, so that getmany still runs often; a longer drain pauses as before.
                await self._pipeline.wait_drained_to(self._max_queued // 2, DRAIN_WAIT_SECONDS)
            self._apply_fetch_pauses(consumer)
            try:
                data = await consumer.getmany(timeout_ms=200, max_records=batch)
            except KafkaError as exc:
                self.kafka_error = describe_kafka_error(exc)
                log.error("fetch failed", extra={"ctx": {"error": self.kafka_error}})
                await asyncio.sleep(1.0)
                continue
            if data:
                self._broker_answered()
            for tp, records in data.items():
                part = self.parts.get(tp)
                if part is None or part.revoked:
                    continue
                self._m.record_consumed(tp.topic, len(records))
                for i, rec in enumerate(records, 1):
                    self._take(part, rec)
                    if i % YIELD_EVERY == 0:
                        # getmany() returns at once while records are buffered: without this, mapping a few
                        # batches back to back holds the loop for 100+ ms and the senders stall meanwhile.
                        await asyncio.sleep(0)
                        if _revoked(part):  # a rebalance ran while we yielded
                            break
                await asyncio.sleep(0)

    def finished_since_commit(self) -> int:
        """Messages (and message-less records) that became final since each partition's last commit was built."""
        return sum(p.offsets.finished - p.offsets.finished_at_commit for p in self.parts.values())

    def stop_fetching(self) -> None:
        """Make `run` return after its current fetch."""
        self._stopping = True

    async def close(self) -> None:
        """Final commit and leave the group (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            await asyncio.wait_for(self.commit(consumer), CLOSE_STEP_SECONDS)
        except TimeoutError:
            log.warning(
                "final commit gave up: the brokers did not answer; what finished since the last commit is sent "
                "again (same msg_keys) after a restart",
                extra={"ctx": {"timeout_seconds": CLOSE_STEP_SECONDS, "servers": self._k.bootstrap_servers}},
            )
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), CLOSE_STEP_SECONDS)
            except TimeoutError:
                log.warning(
                    "leaving the consumer group gave up: the brokers did not answer; the group rebalances after "
                    "the session timeout",
                    extra={"ctx": {"timeout_seconds": CLOSE_STEP_SECONDS, "servers": self._k.bootstrap_servers}},
                )

    # ----------------------------------------------------------------- records
    def _take(self, part: PartitionState, rec: Any) -> None:
        meta = RecordMeta(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=rec.timestamp,
            key=rec.key,
            headers=tuple(rec.headers or ()),
        )
        self._pipeline.take(part, meta, rec.value)

    # ----------------------------------------------------------------- fetch control
    def _apply_fetch_pauses(self, consumer: AIOKafkaConsumer) -> None:
        unfinished = self._pipeline.unfinished
        # hysteresis: stop fetching at the cap, start again below half of it
        over = unfinished >= self._max_queued or (self._over_cap and unfinished > self._max_queued // 2)
        self._over_cap = over
        to_pause, to_resume = [], []
        for tp, part in self.parts.items():
            window = part.offsets
            if part.fetch_paused:
                want_paused = self._halted or over or len(window) > window.max_pending // 2
            else:
                want_paused = self._halted or over or window.full
            if want_paused and not part.fetch_paused:
                to_pause.append(tp)
            elif not want_paused and part.fetch_paused:
                to_resume.append(tp)
            part.fetch_paused = want_paused
        if to_pause:
            consumer.pause(*to_pause)
            for tp in to_pause:
                self._m.partition_paused.labels(tp.topic, str(tp.partition)).set(1)
        if to_resume:
            consumer.resume(*to_resume)
            for tp in to_resume:
                self._m.partition_paused.labels(tp.topic, str(tp.partition)).set(0)

    # ----------------------------------------------------------------- commits
    async def commit(self, consumer: AIOKafkaConsumer | None = None, parts: list[TopicPartition] | None = None) -> None:
        """Commit each (or the given) partition whose finished prefix or finished set above it changed."""
        consumer = consumer or self._consumer
        if consumer is None:
            return
        async with self._commit_lock:  # periodic, early, revoke and final commits never overlap
            await self._commit(consumer, parts)

    async def _commit(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition] | None) -> None:
        budget = self._k.commit_metadata_max_bytes
        requests: dict[TopicPartition, CommitRequest] = {}
        started = time.thread_time()
        for tp in parts if parts is not None else list(self.parts):
            part = self.parts.get(tp)
            if part is None:
                continue
            part.offsets.finished_at_commit = part.offsets.finished
            req = commit_request(part.offsets, part.restored, budget)
            if req is not None:
                requests[tp] = req
                if req.overflow:
                    self._m.commit_metadata_overflow.inc()
        self._commit_build_seconds = time.thread_time() - started
        if not requests:
            return
        try:
            await consumer.commit({tp: (r.offset, r.metadata) for tp, r in requests.items()})
        except (KafkaError, AssertionError) as exc:
            self._m.commits.labels("failed").inc()
            log.warning("commit failed (will retry)", extra={"ctx": {"error": repr(exc)}})
            return
        self._m.commits.labels("ok").inc()
        for tp, r in requests.items():
            part = self.parts.get(tp)
            if part is not None:
                part.offsets.mark_committed(r.offset, r.metadata, r.changes)
                labels = (tp.topic, str(tp.partition))
                self._m.committed_offset.labels(*labels).set(r.offset)
                self._m.commit_metadata_bytes.labels(*labels).set(len(r.metadata))

    def _publish_partition_metrics(self, consumer: AIOKafkaConsumer) -> None:
        now_ms = self._wall_ms()
        for tp, part in self.parts.items():
            labels = (tp.topic, str(tp.partition))
            hw = consumer.highwater(tp)
            if hw is not None:
                part.highwater = hw
                ref = part.offsets.committed
                if ref is None:
                    ref = part.first_offset if part.first_offset is not None else hw
                self._m.consumer_lag.labels(*labels).set(max(0, hw - ref))
            oldest = part.offsets.oldest_unfinished()
            age = (now_ms - oldest[1]) / 1000.0 if oldest else 0.0
            self._m.oldest_age.labels(*labels).set(max(0.0, age))
            self._m.partition_window.labels(*labels).set(len(part.offsets))

    # ----------------------------------------------------------------- rebalance
    async def on_assigned(self, assigned: set[TopicPartition], consumer: AIOKafkaConsumer | None = None) -> None:
        """New partitions: start their watermarks at the committed offset, with what its metadata says is done.

        aiokafka installs the assignment (and starts resolving positions) before it calls this, so the new
        partitions are paused first, before anything is awaited: a record fetched while their state is being built
        would have no watermark to join, and a later commit could pass it. The run loop resumes them. Then this
        waits (bounded) until every new partition has a fetch position, so "assigned" means the consumer knows
        where it reads from — with `auto_offset_reset: latest`, records produced after that are consumed.
        """
        consumer = consumer or self._consumer
        new = sorted((tp for tp in assigned if tp not in self.parts or self.parts[tp].revoked), key=_tp_order)
        committed: dict[TopicPartition, tuple[int, str]] = {}
        if consumer is not None and new:
            consumer.pause(*new)
            try:
                committed = await fetch_committed(consumer, new)
            except Exception as exc:  # never leave assigned partitions without state (they would stall)
                log.error(
                    "reading committed offsets failed: finished records above them may be sent again",
                    extra={"ctx": {"error": repr(exc)}},
                )
        for tp in new:
            offset, metadata = committed.get(tp, (None, ""))
            self.parts[tp] = PartitionState(
                tp.topic,
                tp.partition,
                PartitionOffsets(self._k.max_pending_per_partition, offset, metadata),
                fetch_paused=consumer is not None,
                restored=self._restore(tp, offset, metadata),
            )
        if consumer is not None and new:
            await self._wait_positions(consumer, new)
        self.assigned_once = True
        self._m.rebalances.labels("assigned").inc()
        self._m.assigned_partitions.set(len(self.parts))
        log.info(
            "partitions assigned",
            extra={"ctx": {"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)}},
        )

    async def _wait_positions(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Until each partition has a fetch position (committed offset, or `auto_offset_reset`); bounded."""
        try:
            await asyncio.wait_for(asyncio.gather(*(consumer.position(tp) for tp in tps)), POSITION_WAIT_SECONDS)
        except Exception as exc:  # a revoke meanwhile, a slow broker: fetching resolves it later anyway
            log.warning("fetch positions not known yet after assignment", extra={"ctx": {"error": repr(exc)}})

    def _restore(self, tp: TopicPartition, offset: int | None, metadata: str) -> Progress | None:
        """What the commit metadata says is finished above `offset` (None if nothing); logs unreadable kinds once."""
        decoded = decode(metadata, offset)
        if decoded.kind is not None and decoded.kind not in self._metadata_problems:
            self._metadata_problems.add(decoded.kind)
            log.warning(
                "ignoring commit metadata: records above the committed offset will be processed again",
                extra={"ctx": {"topic": tp.topic, "partition": tp.partition, "problem": decoded.problem}},
            )
        progress = decoded.progress
        if progress is None or progress.empty:
            return None
        log.info(
            "resuming with finished records above the committed offset",
            extra={
                "ctx": {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": offset,
                    "finished_above": progress.finished_count(),
                    "partly_done_fanouts": len(progress.partial),
                }
            },
        )
        return progress

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop taking work for these partitions, let their in-flight calls finish (bounded), commit."""
        parts = [self.parts[tp] for tp in revoked if tp in self.parts]
        for part in parts:
            part.revoked = True
        quiet = await self._pipeline.wait_partitions_quiet(parts, self._k.rebalance_drain_timeout_seconds)
        await self.commit(parts=[tp for tp in revoked if tp in self.parts])
        for tp in revoked:
            if tp in self.parts:
                del self.parts[tp]
                self._m.forget_partition(tp.topic, tp.partition)
        self._m.rebalances.labels("revoked").inc()
        self._m.assigned_partitions.set(len(self.parts))
        log.info(
            "partitions revoked",
            extra={
                "ctx": {
                    "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in revoked),
                    "drained": quiet,
                }
            },
        )


def _revoked(part: PartitionState) -> bool:
    return part.revoked


def _tp_order(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition
