"""Re-publish dead letters to their source topic (`bridge dlq replay`).

Reads the dead-letter topic from the start (or from `since`) up to its end at the moment of the call, keeps
the letters that pass the filters, and produces each to `bridge.source_topic` with the original key, value and
headers, plus `bridge.replay.origin` (so the daemon derives the SAME msg_keys as the first time: the gateway
can de-duplicate) and `bridge.replay.rule` (so only the rule that failed applies again, not every rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bridge.pipeline import REPLAY_ORIGIN, REPLAY_RULE
from bridge.settings import KafkaSettings

from .client_options import connection_options


@dataclass
class ReplayFilter:
    """Which dead letters to replay; None means any."""

    since_ms: int | None = None
    reasons: frozenset[str] | None = None
    rule: str | None = None
    limit: int | None = None


@dataclass
class ReplayReport:
    """What a replay did."""

    scanned: int = 0
    replayed: int = 0
    skipped: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


def _header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("utf-8", "replace")
    return None


def plan_replay(
    headers: list[tuple[str, bytes]], timestamp_ms: int, flt: ReplayFilter
) -> tuple[str, list[tuple[str, bytes]]] | None:
    """(target topic, headers to send) for a dead letter that passes the filter, else None. Pure."""
    if flt.since_ms is not None and timestamp_ms < flt.since_ms:
        return None
    reason = _header(headers, "bridge.reason")
    if flt.reasons is not None and reason not in flt.reasons:
        return None
    rule = _header(headers, "bridge.rule")
    if flt.rule is not None and rule != flt.rule:
        return None
    topic = _header(headers, "bridge.source_topic")
    if not topic:
        return None
    origin = _header(headers, REPLAY_ORIGIN)
    if origin is None:
        origin = "/".join(
            _header(headers, h) or "0"
            for h in (
                "bridge.source_topic",
                "bridge.source_partition",
                "bridge.source_offset",
                "bridge.source_timestamp_ms",
            )
        )
    out = [(k, v) for k, v in headers if not k.startswith("bridge.")]
    out.append((REPLAY_ORIGIN, origin.encode()))
    if rule:
        out.append((REPLAY_RULE, rule.encode()))
    return topic, out


async def replay_dead_letters(
    settings: KafkaSettings, flt: ReplayFilter, *, dry_run: bool = False, progress: Callable[[str], None] | None = None
) -> ReplayReport:
    """Replay the dead-letter topic as it is now; return counts."""
    report = ReplayReport()
    opts = connection_options(settings)
    consumer = AIOKafkaConsumer(**opts, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(**opts, acks="all", enable_idempotence=True)
    await consumer.start()
    try:
        if not dry_run:
            await producer.start()
        parts = consumer.partitions_for_topic(settings.dead_letter_topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(settings.dead_letter_topic) or set()
        tps = [TopicPartition(settings.dead_letter_topic, p) for p in sorted(parts)]
        if not tps:
            return report
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        if flt.since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, flt.since_ms))
            for tp in tps:
                ot = found.get(tp)
                consumer.seek(tp, ot.offset if ot is not None else end[tp])
        else:
            await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= end[tp]:
                        continue
                    report.scanned += 1
                    if flt.limit is not None and report.replayed >= flt.limit:
                        report.skipped += 1
                        continue
                    plan = plan_replay(list(rec.headers or ()), rec.timestamp, flt)
                    if plan is None:
                        report.skipped += 1
                        continue
                    topic, headers = plan
                    if not dry_run:
                        await producer.send_and_wait(topic, value=rec.value, key=rec.key, headers=headers)
                    report.replayed += 1
                    report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if progress is not None:
                progress(f"scanned {report.scanned}, replayed {report.replayed}")
    finally:
        await consumer.stop()
        if not dry_run:
            await producer.stop()
    return report
