"""Reading the dead-letter topic: `Letter` (one dead letter and its `bridge.*` context), `LetterFilter`, `read_letters`.

`read_letters` scans the topic as it is at the moment of the call (from the start, or from a time), with a
consumer that has no group and commits nothing: reading needs only Read and Describe on the topic, and other
readers (the daemon, a replay) are not affected. `bridge dlq inspect` lists what it yields, `bridge dlq replay`
re-publishes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.errors import BridgeError
from bridge.logs import mask_phone, mask_text
from bridge.settings import KafkaSettings

from .client_options import connection_options
from .connect import describe_kafka_error


class KafkaUnreachable(BridgeError):
    """A command-line tool could not reach the brokers (its message names them and the cause)."""


class _Client(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def start_or_close(client: _Client, settings: KafkaSettings, purpose: str) -> None:
    """Start an aiokafka client for a one-shot command; if it cannot start, close it (no "Unclosed …" warning)
    and raise one sentence naming the servers and the cause."""
    try:
        await client.start()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await client.stop()
        if isinstance(exc, KafkaError):
            raise KafkaUnreachable(
                f"cannot reach Kafka at {settings.bootstrap_servers} to {purpose}: {describe_kafka_error(exc)}"
            ) from exc
        raise


@dataclass(frozen=True, slots=True)
class Letter:
    """A record of the dead-letter topic: where it is, what it carries, and accessors for its context headers."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        """The first header `name` as text, or None."""
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str | None:
        """`bridge.reason`: not_json, mapping_error, rejected, retries_exhausted, …"""
        return self.header("bridge.reason")

    @property
    def rule(self) -> str | None:
        """`bridge.rule`, when a rule was involved."""
        return self.header("bridge.rule")

    @property
    def source(self) -> str:
        """`topic/partition@offset` of the original record."""
        topic, partition, offset = (
            self.header(f"bridge.source_{name}") or "?" for name in ("topic", "partition", "offset")
        )
        return f"{topic}/{partition}@{offset}"

    def recipient_masked(self) -> str | None:
        """The rendered message's `mobile_receiver`, masked (`138****8000`); None when there was no message."""
        raw = next((v for k, v in self.headers if k == "bridge.message"), None)
        if raw is None:
            return None
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        phone = message.get("mobile_receiver") if isinstance(message, dict) else None
        return mask_phone(str(phone)) if phone not in (None, "") else None

    def summary(self) -> dict[str, object]:
        """What an operator needs to see of it, phone numbers masked (the value itself is left out)."""
        h = self.header
        error = h("bridge.error")
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "reason": self.reason,
            "rule": self.rule,
            "field": h("bridge.field"),
            "source": self.source,
            "recipient": self.recipient_masked(),
            "code": h("bridge.code"),
            "sub_code": h("bridge.sub_code"),
            "attempts": h("bridge.attempts"),
            "msg_key": h("bridge.msg_key"),
            "error": mask_text(error) if error is not None else None,
        }


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters to take; None means any. Times are the dead-letter records' timestamps (epoch ms)."""

    since_ms: int | None = None
    until_ms: int | None = None
    reasons: frozenset[str] | None = None
    rule: str | None = None

    def accepts(self, letter: Letter) -> bool:
        """True when the letter passes every given filter. Pure."""
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and letter.timestamp_ms >= self.until_ms:
            return False
        if self.reasons is not None and letter.reason not in self.reasons:
            return False
        return self.rule is None or letter.rule == self.rule


async def read_letters(settings: KafkaSettings, since_ms: int | None = None) -> AsyncGenerator[Letter, None]:
    """Every letter of `settings.dead_letter_topic` from `since_ms` (or the start) up to the topic's end at the
    moment of the call, partition by partition; no consumer group, nothing committed."""
    consumer = AIOKafkaConsumer(
        **connection_options(settings), enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
    )
    await start_or_close(consumer, settings, f"read {settings.dead_letter_topic}")
    try:
        topic = settings.dead_letter_topic
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        if since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            for tp in tps:
                ot = found.get(tp)
                consumer.seek(tp, ot.offset if ot is not None else end[tp])
        else:
            await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in sorted(batch.items(), key=lambda item: item[0].partition):
                for rec in records:
                    if rec.offset < end[tp]:
                        yield Letter(
                            tp.partition, rec.offset, rec.timestamp, rec.key, rec.value, tuple(rec.headers or ())
                        )
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
