"""Re-publish dead letters to their source topic (`bridge dlq replay`).

Reads the dead-letter topic from the start (or from `since`) up to its end at the moment of the call, keeps
the letters that pass the filters, and produces each to `bridge.source_topic` with the original key, value and
headers, plus `bridge.replay.origin` (so the daemon derives the SAME msg_keys as the first time: the gateway
can de-duplicate) and `bridge.replay.rule` (so only the rule that failed applies again, not every rule).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from bridge.pipeline import REPLAY_ORIGIN, REPLAY_RULE
from bridge.settings import KafkaSettings

from .client_options import connection_options
from .letters import Letter, LetterFilter, read_letters, start_or_close


@dataclass
class ReplayReport:
    """What a replay did."""

    scanned: int = 0
    replayed: int = 0
    skipped: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


def plan_replay(letter: Letter) -> tuple[str, list[tuple[str, bytes]]] | None:
    """(target topic, headers to send) for a dead letter, or None when it names no source topic. Pure."""
    topic = letter.header("bridge.source_topic")
    if not topic:
        return None
    origin = letter.header(REPLAY_ORIGIN)
    if origin is None:
        origin = "/".join(
            letter.header(h) or "0"
            for h in (
                "bridge.source_topic",
                "bridge.source_partition",
                "bridge.source_offset",
                "bridge.source_timestamp_ms",
            )
        )
    out = [(k, v) for k, v in letter.headers if not k.startswith("bridge.")]
    out.append((REPLAY_ORIGIN, origin.encode()))
    if letter.rule:
        out.append((REPLAY_RULE, letter.rule.encode()))
    return topic, out


async def replay_dead_letters(
    settings: KafkaSettings,
    flt: LetterFilter,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    each: Callable[[Letter, str], None] | None = None,
) -> ReplayReport:
    """Replay the dead-letter topic as it is now (at most `limit` letters); `each(letter, target topic)` is
    called for every letter replayed (or, with dry_run, that would be). Return counts."""
    report = ReplayReport()
    producer: AIOKafkaProducer | None = None
    if not dry_run:  # a dry run creates no producer at all
        producer = AIOKafkaProducer(**connection_options(settings), acks="all", enable_idempotence=True)
        await start_or_close(producer, settings, "replay dead letters")
    try:
        async with contextlib.aclosing(read_letters(settings, flt.since_ms)) as letters:
            async for letter in letters:
                report.scanned += 1
                plan = plan_replay(letter) if flt.accepts(letter) else None
                if plan is None or (limit is not None and report.replayed >= limit):
                    report.skipped += 1
                    continue
                topic, headers = plan
                if producer is not None:
                    await producer.send_and_wait(topic, value=letter.value, key=letter.key, headers=headers)
                report.replayed += 1
                report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
                if each is not None:
                    each(letter, topic)
    finally:
        if producer is not None:
            await producer.stop()
    return report
