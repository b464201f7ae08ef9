"""The dead-letter sink: writes DeadLetters to the DLQ topic, retrying until the broker takes them."""

from __future__ import annotations

import asyncio
import logging
import random

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from bridge.flow.backoff import backoff_delay
from bridge.metrics import Metrics
from bridge.settings import KafkaSettings
from bridge.work import DeadLetter

from .client_options import connection_options

log = logging.getLogger("bridge.dead_letter")

# When the DLQ topic refuses a record as too large, the copy keeps only this much of the value.
TRUNCATED_VALUE_BYTES = 16 * 1024
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class DeadLetterSink:
    """Publishes dead letters with the original key, value and headers plus `bridge.*` context headers.

    `publish` only returns once the broker acknowledged (acks=all); until then it retries with backoff and
    the record's offset is not committed, so nothing is lost if the DLQ is unavailable.
    """

    def __init__(self, settings: KafkaSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._m = metrics
        self._producer: AIOKafkaProducer | None = None
        self.healthy = False
        self.topic = settings.dead_letter_topic

    async def start(self) -> None:
        """Connect the producer."""
        self._producer = AIOKafkaProducer(
            **connection_options(self._settings),
            acks="all",
            # Not idempotent on purpose: after one refused (too large) batch, aiokafka's idempotent producer
            # answers OutOfOrderSequenceNumber for that partition forever. A duplicate dead letter is harmless.
            enable_idempotence=False,
            linger_ms=5,
            max_request_size=max(self._settings.max_record_bytes * 2 + 65536, 1_048_576),
        )
        await self._producer.start()
        self.healthy = True

    async def stop(self) -> None:
        """Flush and close (idempotent)."""
        producer, self._producer = self._producer, None
        self.healthy = False
        if producer is not None:
            await producer.stop()

    async def publish(self, letter: DeadLetter) -> None:
        """Write one dead letter; retry until acknowledged."""
        attempt = 0
        meta = letter.record.meta
        value = letter.record.value
        headers = letter.headers()
        while True:
            producer = self._producer
            if producer is None:
                raise RuntimeError("dead-letter sink is not started")
            try:
                await producer.send_and_wait(self.topic, value=value, key=meta.key, headers=headers)
            except _TOO_LARGE as exc:
                if value is None or len(value) <= TRUNCATED_VALUE_BYTES:
                    raise RuntimeError(f"dead letter refused as too large even when truncated: {exc!r}") from exc
                # A copy that fits beats a partition stuck forever: keep the head of the value and say so.
                log.warning(
                    "dead-letter topic refused the full record; writing a truncated copy",
                    extra={"ctx": {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}},
                )
                headers = [*headers, ("bridge.value_truncated_from", str(len(value)).encode())]
                value = value[:TRUNCATED_VALUE_BYTES]
                continue
            except (KafkaError, OSError) as exc:
                attempt += 1
                self.healthy = False
                self._m.dead_letter_failures.inc()
                delay = backoff_delay(attempt, 0.2, 10.0, random.random) + 0.05
                log.error(
                    "dead-letter write failed; retrying (offset not committed)",
                    extra={
                        "ctx": {
                            "topic": meta.topic,
                            "partition": meta.partition,
                            "offset": meta.offset,
                            "dlq_topic": self.topic,
                            "error": repr(exc),
                            "retry_in_seconds": round(delay, 2),
                        }
                    },
                )
                await asyncio.sleep(delay)
                continue
            self.healthy = True
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
                    }
                },
            )
            return
