"""A producer for one topic that never gives up: the base of the dead-letter and the deferred-topic writers.

- it connects in the background, retrying for as long as the brokers are away;
- at start (and until it passes) the topic is checked to exist and be visible to this client, so a missing
  topic or a missing ACL is one clear ERROR line at start, not a surprise on the first write;
- every failed write is retried with capped backoff, counted, logged at ERROR once per cause (then DEBUG),
  and shown in /readyz (`problem`) until a write succeeds again;
- a record the topic refuses as too large is written in a smaller shape, step by step (the subclass says
  what each shape is); past the smallest, it either keeps retrying from the full shape (the topic config
  may be fixed meanwhile) or gives up with `TooLarge`, as the subclass chooses.
A write returns only once the broker acknowledged it (acks=all): the caller's offset waits until then.
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
from bridge.settings import KafkaSettings

from .client_options import connection_options
from .connect import connect_with_retry, describe_kafka_error

TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
TOPIC_RECHECK_SECONDS = 30.0
Shape = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


class TooLarge(Exception):
    """The topic refused even the smallest shape of a record."""


class TopicWriter:
    """Writes records to `topic` until acknowledged; see the module docstring. Never raises but TooLarge."""

    noun = "topic"  # in log lines and /readyz: "<noun> topic not usable", "<noun> write failed"
    item = "record"  # what one write carries
    held = "records wait and their offsets are held until it is"  # what a broken topic means
    topic_key = "topic"  # the log context key naming the topic
    doc = "docs/operating.md"  # where creating the topic is explained
    rights = "Write"  # the ACL the bridge needs on the topic
    shapes: tuple[str, ...] = ("full",)  # names of the shape levels, for log lines

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        logger: logging.Logger,
        *,
        on_failure: Callable[[], None],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._log = logger
        self._on_failure = on_failure
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self.problem: str | None = "producer connecting"  # what keeps the topic from working now (for /readyz)
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
            # answers OutOfOrderSequenceNumber for that partition forever. A duplicate record is harmless here.
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
            f"{self.noun} producer",
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
                    self._log.info(f"{self.noun} topic ready", extra={"ctx": {self.topic_key: self.topic}})
                self.problem = None
                self._logged_cause = None
                return
            self.problem = problem
            if problem != self._logged_cause:
                self._logged_cause = problem
                self._log.error(
                    f"{self.noun} topic not usable: {self.held}",
                    extra={"ctx": {self.topic_key: self.topic, "error": problem}},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TOPIC_RECHECK_SECONDS)

    async def _check_topic(self, producer: AIOKafkaProducer) -> str | None:
        """None when the topic is known to the brokers and visible to us, else why not."""
        # metadata of a topic being auto-created can take a while on a busy broker: never less than 10 s
        timeout = max(10.0, self._settings.connect_timeout_seconds)
        try:
            await asyncio.wait_for(producer.partitions_for(self.topic), timeout)
        except TimeoutError:
            return f"topic {self.topic!r} does not exist (create it: see {self.doc})"
        except KafkaError as exc:
            why = describe_kafka_error(exc)
            return f"topic {self.topic!r}: {why} (check the ACLs: the bridge must {self.rights} it)"
        return None

    async def stop(self) -> None:
        """Flush and close (idempotent)."""
        producer, self._producer = self._producer, None
        self._connected.clear()
        if producer is not None:
            await producer.stop()

    def _failed(self, cause: str, ctx: dict[str, object], retry_in: float) -> None:
        self._on_failure()
        self.problem = f"writing to {self.topic!r} fails: {cause}"
        ctx = {**ctx, self.topic_key: self.topic, "error": cause, "retry_in_seconds": round(retry_in, 2)}
        if cause != self._logged_cause:
            self._logged_cause = cause
            self._log.error(f"{self.noun} write failed; retrying (offset not committed)", extra={"ctx": ctx})
        else:
            self._log.debug(f"{self.noun} write failed again", extra={"ctx": ctx})

    async def write(
        self,
        shape: Callable[[int], Shape],
        levels: int,
        ctx: dict[str, object],
        *,
        smaller: Callable[[int], int] = lambda level: level + 1,
        give_up: bool = False,
    ) -> int:
        """Write `shape(0)` until acknowledged; on "too large", `shape(smaller(level))` while below `levels`.

        Returns the shape level written. Past the smallest shape: TooLarge when `give_up`, else retry from
        the full shape after a backoff. Never raises otherwise (except CancelledError).
        """
        attempt = 0
        level = 0
        while True:
            await self._connected.wait()
            producer = self._producer
            if producer is None:
                continue
            key, value, headers = shape(level)
            try:
                await producer.send_and_wait(self.topic, value=value, key=key, headers=headers)
            except asyncio.CancelledError:
                raise
            except TOO_LARGE as exc:
                if level < levels - 1:
                    level = smaller(level)
                    self._log.warning(
                        f"{self.noun} topic refused the {self.item} as too large; writing a smaller one",
                        extra={"ctx": {**ctx, self.topic_key: self.topic, "shape": self.shapes[level]}},
                    )
                    continue
                if give_up:
                    raise TooLarge(describe_kafka_error(exc)) from exc
                attempt += 1
                delay = backoff_delay(attempt, 0.5, 30.0, self._rand) + 0.05
                self._failed(f"too large even in its smallest shape ({describe_kafka_error(exc)})", ctx, delay)
                level = 0  # the topic may be fixed meanwhile: try the full record first again
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # KafkaError, OSError, anything: retried, never a dead task
                attempt += 1
                delay = backoff_delay(attempt, 0.2, 10.0, self._rand) + 0.05
                self._failed(describe_kafka_error(exc), ctx, delay)
                await asyncio.sleep(delay)
                continue
            if self._logged_cause is not None:
                self._log.info(f"{self.noun} writes succeed again", extra={"ctx": {self.topic_key: self.topic}})
                self._logged_cause = None
            self.problem = None
            return level
