"""The dead-letter sink: writes DeadLetters to the DLQ topic, retrying until the broker takes them.

It never stalls silently and never gives up on a letter (`bridge.kafka.writer`: background connect, a topic
check at start, retries with backoff, ERROR once per cause, /readyz). A letter the topic refuses as too large
is written smaller, step by step: value truncated, then value omitted with only the essential headers, then
the bare minimum (reason and source coordinates) — a letter that says what was lost beats a partition that
never commits. If even that is refused (a misconfigured topic), it keeps retrying from the full letter, so
fixing the topic config is all it takes. The record's offset is not committed until its letter is
acknowledged (acks=all).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from bridge.metrics import Metrics
from bridge.settings import KafkaSettings
from bridge.work import DeadLetter

from .writer import TopicWriter

log = logging.getLogger("bridge.dead_letter")

# When the DLQ topic refuses a record as too large, the copy keeps only this much of the value.
TRUNCATED_VALUE_BYTES = 16 * 1024
MINIMAL_ERROR_CHARS = 200
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


class DeadLetterSink(TopicWriter):
    """Publishes dead letters with the original key, value and headers plus `bridge.*` context headers.

    `publish` only returns once the broker acknowledged (acks=all); until then it retries with backoff and
    the record's offset is not committed, so nothing is lost if the DLQ is unavailable. It never raises
    (except CancelledError on shutdown).
    """

    noun = "dead-letter"
    item = "letter"
    held = "dead letters wait and their offsets are held until it is"
    topic_key = "dlq_topic"
    doc = "docs/operating.md, 'The dead-letter topic'"
    shapes = SHAPES

    def __init__(self, settings: KafkaSettings, metrics: Metrics, *, rand: Callable[[], float] = random.random) -> None:
        super().__init__(
            settings, settings.dead_letter_topic, log, on_failure=metrics.dead_letter_failures.inc, rand=rand
        )

    async def publish(self, letter: DeadLetter) -> None:
        """Write one dead letter; retry until acknowledged. Never raises except CancelledError."""
        meta = letter.record.meta
        value = letter.record.value
        small = value is None or len(value) <= TRUNCATED_VALUE_BYTES
        level = await self.write(
            lambda lvl: shape_letter(letter, lvl),
            len(SHAPES),
            {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset},
            smaller=lambda lvl: 2 if lvl == 0 and small else lvl + 1,
        )
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
