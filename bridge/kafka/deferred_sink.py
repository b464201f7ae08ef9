"""The deferred topic's writer: messages held by a policy (and digest items) until the broker has them.

A `bridge.kafka.writer.TopicWriter`: background connect, topic check at start, retries with backoff until
acknowledged (acks=all), ERROR once per cause, /readyz. The source record's offset moves only after the
write, so a deferred message is never lost between the source and this topic. A digest item the topic
refuses as too large is written again without its event (the summary's templates then see `event: null` for
it); anything still too large raises `DeferralRefused` (the stage dead-letters the source record).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from bridge.metrics import Metrics
from bridge.policy.deferred import DeferralRefused, DeferredRecord, encode
from bridge.settings import KafkaSettings

from .writer import TooLarge, TopicWriter

log = logging.getLogger("bridge.deferred")


class DeferredSink(TopicWriter):
    """Writes `DeferredRecord`s to `kafka.deferred_topic` (keyed by recipient)."""

    noun = "deferred"
    item = "deferred message"
    held = "deferred messages wait and their source offsets are held until it is"
    topic_key = "deferred_topic"
    doc = "docs/deployment.md, 'The deferred topic'"
    rights = "Write and Read"
    shapes = ("full", "without_event")

    def __init__(
        self, settings: KafkaSettings, topic: str, metrics: Metrics, *, rand: Callable[[], float] = random.random
    ) -> None:
        super().__init__(settings, topic, log, on_failure=metrics.deferred_write_failures.inc, rand=rand)

    async def publish(self, record: DeferredRecord) -> None:
        """Write one record; retry until acknowledged. DeferralRefused when it is too large in every shape."""
        levels = 2 if record.kind == "digest" and record.context is not None else 1
        ctx: dict[str, object] = {"rule": record.rule, "msg_key": record.message.msg_key, "origin": record.origin}
        try:
            await self.write(lambda level: encode(record, with_context=level == 0), levels, ctx, give_up=True)
        except TooLarge as exc:
            raise DeferralRefused(str(exc)) from exc
