"""The dead-letter sink: writes DeadLetters to the DLQ topic, retrying until the broker takes them.

It never stalls silently and never gives up on a letter:
- the producer connects in the background, retrying for as long as the brokers are away;
- at start (and until it passes) the DLQ topic is checked to exist and be visible to this client, so a
  missing topic or a missing ACL is one clear ERROR line at start, not a surprise on the first bad record;
- every failed write is retried with capped backoff, counted, logged at ERROR once per cause (then DEBUG),
  and shown in /readyz until a write succeeds again;
- a letter the topic refuses as too large is written smaller, step by step: value truncated, then value
  omitted with only the essential headers, then the bare minimum (reason and source coordinates) — a letter
  that says what was lost beats a partition that never commits. If even that is refused (a misconfigured
  topic), it keeps retrying from the full letter, so fixing the topic config is all it takes.
The record's offset is not committed until its letter is acknowledged (acks=all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from bridge.flow.backoff import backoff_delay
from bridge.metrics import Metrics
from bridge.settings import KafkaSettings
from bridge.work import DeadLetter

from .client_options import connection_options
from .connect import connect_with_retry, describe_kafka_error

log = logging.getLogger("bridge.dead_letter")

# When the DLQ topic refuses a record as too large, the copy keeps only this much of the value.
TRUNCATED_VALUE_BYTES = 16 * 1024
MINIMAL_ERROR_CHARS = 200
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
# headers kept in the minimal letter (besides the value being omitted)
_ESSENTIAL = frozenset(
    {
        "bridge.reason",
        "bridge.error",
        "bridge.rule",
        "bridge.field",
        "bridge.code",
        "bridge.sub_code",
        "bridge.msg_key",
        "bridge.source_topic",
        "bridge.source_partition",
        "bridge.source_offset",
        "bridge.source_timestamp_ms",
    }
)
_BARE = frozenset({"bridge.reason", "bridge.source_topic", "bridge.source_partition", "bridge.source_offset"})
SHAPES = ("full", "value_truncated", "value_omitted", "bare")
TOPIC_RECHECK_SECONDS = 30.0


def shape_letter(letter: DeadLetter, level: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of `letter` at size level 0 (full) … 3 (bare). Pure."""
    meta = letter.record.meta
    value = letter.record.value
    headers = letter.headers()
    if level == 0:
        return meta.key, (value if value is not None or meta.key is not None else b""), headers
    size = str(len(value) if value is not None else 0).encode()
    if level == 1:
        if value is None or len(value) <= TRUNCATED_VALUE_BYTES:
            return shape_letter(letter, 2)
        return meta.key, value[:TRUNCATED_VALUE_BYTES], [*headers, ("bridge.value_truncated_from", size)]
    keep = _ESSENTIAL if level == 2 else _BARE
    slim: list[tuple[str, bytes]] = []
    for name, raw in headers:
        if name in keep:
            slim.append((name, raw[:MINIMAL_ERROR_CHARS] if name == "bridge.error" else raw))
    slim.append(("bridge.value_omitted", size))
    slim.append(("bridge.letter_shape", SHAPES[level].encode()))
    return (meta.key if level == 2 else None), b"", slim  # (aiokafka needs a key or a value: an empty value)


class DeadLetterSink:
    """Publishes dead letters with the original key, value and headers plus `bridge.*` context headers.

    `publish` only returns once the broker acknowledged (acks=all); until then it retries with backoff and
    the record's offset is not committed, so nothing is lost if the DLQ is unavailable. It never raises
    (except CancelledError on shutdown).
    """

    def __init__(self, settings: KafkaSettings, metrics: Metrics, *, rand: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._m = metrics
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self.topic = settings.dead_letter_topic
        self.problem: str | None = "producer connecting"  # what keeps the DLQ from working now (for /readyz), or None
        self._logged_cause: str | None = None
        self._rand = rand

    @property
    def healthy(self) -> bool:
        """Connected, the topic checked, and the last write (if any) succeeded."""
        return self.problem is None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **connection_options(self._settings),
            acks="all",
            # Not idempotent on purpose: after one refused (too large) batch, aiokafka's idempotent producer
            # answers OutOfOrderSequenceNumber for that partition forever. A duplicate dead letter is harmless.
            enable_idempotence=False,
            linger_ms=5,
            max_request_size=max(self._settings.max_record_bytes * 2 + 65536, 1_048_576),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying while the brokers are away), then check the topic until it passes."""
        k = self._settings

        def failed(reason: str) -> None:
            self.problem = f"kafka unreachable: {reason}"

        producer = await connect_with_retry(
            "dead-letter producer",
            self._new_producer,
            lambda p: p.start(),
            lambda p: p.stop(),
            servers=k.bootstrap_servers,
            timeout=k.connect_timeout_seconds,
            stop=stop,
            on_error=failed,
        )
        if producer is None:
            return
        self._producer = producer
        self._connected.set()
        while not stop.is_set():
            problem = await self._check_topic(producer)
            if problem is None:
                if self.problem is not None and self._logged_cause is not None:
                    log.info("dead-letter topic ready", extra={"ctx": {"dlq_topic": self.topic}})
                self.problem = None
                self._logged_cause = None
                return
            self.problem = problem
            if problem != self._logged_cause:
                self._logged_cause = problem
                log.error(
                    "dead-letter topic not usable: dead letters wait and their offsets are held until it is",
                    extra={"ctx": {"dlq_topic": self.topic, "error": problem}},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TOPIC_RECHECK_SECONDS)

    async def _check_topic(self, producer: AIOKafkaProducer) -> str | None:
        """None when the topic is known to the brokers and visible to us, else why not."""
        timeout = self._settings.connect_timeout_seconds
        try:
            await asyncio.wait_for(producer.partitions_for(self.topic), timeout)
        except TimeoutError:
            return f"topic {self.topic!r} does not exist (create it: see docs/operating.md, 'The dead-letter topic')"
        except KafkaError as exc:
            return f"topic {self.topic!r}: {describe_kafka_error(exc)} (check the ACLs: the bridge must Write it)"
        return None

    async def stop(self) -> None:
        """Flush and close (idempotent)."""
        producer, self._producer = self._producer, None
        self._connected.clear()
        if producer is not None:
            await producer.stop()

    def _failed(self, cause: str, letter: DeadLetter, retry_in: float) -> None:
        self._m.dead_letter_failures.inc()
        self.problem = f"writing to {self.topic!r} fails: {cause}"
        meta = letter.record.meta
        ctx = {
            "topic": meta.topic,
            "partition": meta.partition,
            "offset": meta.offset,
            "dlq_topic": self.topic,
            "error": cause,
            "retry_in_seconds": round(retry_in, 2),
        }
        if cause != self._logged_cause:
            self._logged_cause = cause
            log.error("dead-letter write failed; retrying (offset not committed)", extra={"ctx": ctx})
        else:
            log.debug("dead-letter write failed again", extra={"ctx": ctx})

    async def publish(self, letter: DeadLetter) -> None:
        """Write one dead letter; retry until acknowledged. Never raises except CancelledError."""
        attempt = 0
        level = 0
        meta = letter.record.meta
        while True:
            await self._connected.wait()
            producer = self._producer
            if producer is None:
                continue
            key, value, headers = shape_letter(letter, level)
            try:
                await producer.send_and_wait(self.topic, value=value, key=key, headers=headers)
            except asyncio.CancelledError:
                raise
            except _TOO_LARGE as exc:
                if level < len(SHAPES) - 1:
                    level += 1
                    if level == 1 and value is not None and len(value) <= TRUNCATED_VALUE_BYTES:
                        level = 2
                    log.warning(
                        "dead-letter topic refused the letter as too large; writing a smaller one",
                        extra={
                            "ctx": {
                                "topic": meta.topic,
                                "partition": meta.partition,
                                "offset": meta.offset,
                                "dlq_topic": self.topic,
                                "shape": SHAPES[level],
                            }
                        },
                    )
                    continue
                attempt += 1
                delay = backoff_delay(attempt, 0.5, 30.0, self._rand) + 0.05
                self._failed(f"too large even with no value ({describe_kafka_error(exc)})", letter, delay)
                level = 0  # the topic may be fixed meanwhile: try the full letter first again
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # KafkaError, OSError, anything: retried, never a dead task
                attempt += 1
                delay = backoff_delay(attempt, 0.2, 10.0, self._rand) + 0.05
                self._failed(describe_kafka_error(exc), letter, delay)
                await asyncio.sleep(delay)
                continue
            if self._logged_cause is not None:
                log.info("dead-letter writes succeed again", extra={"ctx": {"dlq_topic": self.topic}})
                self._logged_cause = None
            self.problem = None
            log.warning(
                "dead-lettered",
                extra={
                    "ctx": {
                        "topic": meta.topic,
                        "partition": meta.partition,
                        "offset": meta.offset,
                        "reason": letter.reason,
                        "rule": letter.rule,
                        "field": letter.field,
                        "code": letter.code,
                        "sub_code": letter.sub_code,
                        "msg_key": letter.msg_key,
                        "error": letter.message,
                        "shape": SHAPES[level],
                    }
                },
            )
            return
