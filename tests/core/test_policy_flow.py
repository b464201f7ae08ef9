"""Policies end to end in one process, on virtual time (issue 15): pipeline → policy stage → deferred topic (an
in-memory stand-in) → deferred pipeline → delivery engine → a recording gateway. Every source offset becomes
committable only once each of its messages is delivered, written to the deferred topic, or dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from engine_rig import Rig, until
from virtual_time import VirtualTime

from bridge.kafka.offsets import PartitionOffsets
from bridge.models import RecordMeta
from bridge.pipeline import Pipeline
from bridge.policy.deferred import DeferralRefused, DeferredRecord, encode
from bridge.policy.deferred_pipeline import DIGEST_GRACE_SECONDS, DeferredPipeline
from bridge.policy.stage import PolicyStage
from bridge.policy.store import MemoryPolicyStore
from bridge.rules import compile_rules
from bridge.rules.keys import record_key
from bridge.settings import Settings
from bridge.work import PartitionState

SOURCE = "campus.course.events"
DEFERRED = "campus-bridge.deferred"
SHANGHAI = ZoneInfo("Asia/Shanghai")
QUIET = {"from": "22:30", "to": "07:00", "timezone": "Asia/Shanghai", "action": "defer"}
ANNOUNCE: dict[str, Any] = {
    "id": "course_announcement",
    "when": "event.type == 'announcement'",
    "for_each": "event.students",
    "quiet_hours": QUIET,
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ item }}",
        "json_data": {"title": "{{ event.title }}", "to": "{{ item }}"},
    },
}
LIKES: dict[str, Any] = {
    "id": "post_liked",
    "when": "event.type == 'like'",
    "limit": {"per_recipient": 5, "per_seconds": 600, "over": "digest"},
    "digest": {
        "window_seconds": 300,
        "max_items": 50,
        "message": {
            "sender": "{{ items[0].event.actor }}",
            "json_data": {"title": "{{ items[0].event.actor }} 等 {{ count }} 人赞了你的帖子", "count": "{{ count }}"},
        },
    },
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ event.to }}",
        "sender": "{{ event.actor }}",
        "json_data": {"title": "{{ event.actor }} 赞了你的帖子"},
    },
}
DEDUPE: dict[str, Any] = {
    "id": "note",
    "when": "event.type == 'note'",
    "dedupe": {"key": "{{ event.id }}", "window_seconds": 3600},
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ event.to }}",
        "json_data": {"id": "{{ event.id }}"},
    },
}


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


class DeferredTopic:
    """The deferred topic's writer and log: `publish` appends the encoded record (after `hold`, if set)."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        self.hold: asyncio.Event | None = None
        self.refuse = False

    async def publish(self, record: DeferredRecord) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse:
            raise DeferralRefused("RecordTooLargeError")
        self.log.append(encode(record))


@dataclass
class Clock:
    """A wall clock (epoch ms) that starts at `start` and moves with the virtual time."""

    vt: VirtualTime
    start: int

    def __call__(self) -> int:
        return self.start + int((self.vt.time() - 1000.0) * 1000)


@dataclass
class World:
    wall: Clock
    rig: Rig
    topic: DeferredTopic
    stage: PolicyStage
    pipeline: Pipeline
    source: PartitionState
    settings: Settings
    offset: int = 0

    def take(self, event: dict[str, Any]) -> None:
        meta = RecordMeta(SOURCE, 0, self.offset, self.wall())
        self.offset += 1
        self.pipeline.take(self.source, meta, orjson.dumps(event))

    def deferred_pipeline(self) -> tuple[DeferredPipeline, PartitionState]:
        """A fresh deferred side (as after a restart: nothing committed) that has read the whole topic."""
        dp = DeferredPipeline(
            self.settings, lambda: self.pipeline.rules, self.rig.engine, self.rig.metrics, wall_ms=self.wall
        )
        part = PartitionState(DEFERRED, 0, PartitionOffsets(10_000, 0))
        for offset, (key, value, _headers) in enumerate(self.topic.log):
            dp.take(part, RecordMeta(DEFERRED, 0, offset, self.wall(), key), value)
        return dp, part

    def calls(self) -> list[Any]:
        return [c for c in self.rig.gateway.calls if c.outcome is not None]

    def sample(self, name: str, **labels: str) -> float:
        return self.rig.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def world(vtime: VirtualTime, rules: list[dict[str, Any]], start: str) -> AsyncIterator[World]:
    rig = Rig(vtime, max_in_flight=64)
    await rig.engine.start()
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": [SOURCE], "deferred_topic": DEFERRED},
            "gateway": {"app_key": "k", "app_secret": "s"},
        }
    )
    topic = DeferredTopic()
    source = PartitionState(SOURCE, 0, PartitionOffsets(10_000, 0))
    clock = Clock(vtime, at(start))
    stage = PolicyStage(
        store=MemoryPolicyStore(), engine=rig.engine, deferred=topic, metrics=rig.metrics, wall_ms=clock
    )
    await stage.start()
    pipeline = Pipeline(settings, compile_rules(rules), rig.engine, rig.metrics, wall_ms=clock, policies=stage)
    w = World(clock, rig, topic, stage, pipeline, source, settings)
    try:
        yield w
    finally:
        await w.stage.stop(1.0)
        await rig.engine.stop(1.0)


async def run_until(dp: DeferredPipeline, w: World, wall: int) -> None:
    """Let the deferred pipeline's due-time loop run until the wall clock reads `wall`."""
    task = asyncio.create_task(dp.run())
    try:
        await asyncio.sleep(max(0.0, (wall - w.wall()) / 1000))
        await asyncio.sleep(0.5)  # deliveries under way finish
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_3am_fanout_is_deferred_to_the_end_of_quiet_hours_and_delivered_then_surviving_a_restart(
    vtime: VirtualTime,
) -> None:
    async with world(vtime, [ANNOUNCE], "2024-06-03 03:00") as w:
        students = [f"1360000{i:04d}" for i in range(300)]
        w.topic.hold = asyncio.Event()  # the deferred topic has not acknowledged yet
        w.take({"type": "announcement", "title": "期中考试时间调整", "students": students})
        await until(lambda: w.stage.pending == 300 and w.source.in_flight == 300)
        assert w.source.offsets.commit_point() is None  # the source offset waits for the deferred topic
        w.topic.hold.set()
        await until(lambda: len(w.topic.log) == 300)
        await until(lambda: w.source.offsets.commit_point() == 1)  # ... and moves once all 300 are written
        assert w.sample("bridge_policy_total", rule="course_announcement", policy="quiet_hours", action="defer") == 300
        assert w.calls() == []
        records = [orjson.loads(v) for _, v, _ in w.topic.log]
        assert {r["due_ms"] for r in records} == {at("2024-06-03 07:00")}
        rendered = {r["message"]["mobile_receiver"]: r["message"]["msg_key"] for r in records}

        # the first deferred reader is stopped at 05:00 before anything is due: nothing was committed
        first, first_part = w.deferred_pipeline()
        await run_until(first, w, at("2024-06-03 05:00"))
        assert w.calls() == [] and first_part.offsets.commit_point() is None
        first_part.revoked = True  # (a restart: its state is gone)

        again, part = w.deferred_pipeline()  # the restarted reader reads the topic from the committed offset (0)
        await run_until(again, w, at("2024-06-03 06:59"))
        assert w.calls() == []
        await run_until(again, w, at("2024-06-03 07:00") + 1000)
        calls = w.calls()
        assert len(calls) == 300
        assert {c.recipient: c.msg_key for c in calls} == rendered  # the msg_keys the rule rendered at 03:00
        assert min(c.start for c in calls) >= 1000.0 + (at("2024-06-03 07:00") - at("2024-06-03 03:00")) / 1000
        await until(lambda: part.offsets.commit_point() == 300)
        assert w.sample("bridge_messages_total", rule="course_announcement", outcome="delivered") == 300


async def test_40_likes_in_a_minute_send_the_cap_then_one_summary_naming_the_count(vtime: VirtualTime) -> None:
    async with world(vtime, [LIKES], "2024-06-03 10:00") as w:
        t0 = w.wall()
        for i in range(40):
            w.take({"type": "like", "to": "13800138000", "actor": f"同学{i}", "post": "p778"})
            await asyncio.sleep(1.5)
        await until(lambda: len(w.calls()) == 5 and len(w.topic.log) == 35)
        await until(lambda: w.source.offsets.commit_point() == 40)  # all 40 final: 5 delivered, 35 handed on
        assert [c.msg_key for c in w.calls()] == [record_key(SOURCE, 0, o, "post_liked", "") for o in range(5)]
        assert w.sample("bridge_policy_total", rule="post_liked", policy="limit", action="pass") == 5
        assert w.sample("bridge_policy_total", rule="post_liked", policy="limit", action="digest") == 35
        assert w.sample("bridge_policy_total", rule="post_liked", policy="digest", action="fold") == 35

        dp, part = w.deferred_pipeline()
        due = t0 + 600_000  # the first like's slot + per_seconds: the summary takes the cap's next slot
        await run_until(dp, w, due + int(DIGEST_GRACE_SECONDS * 1000) - 1000)
        assert len(w.calls()) == 5
        await run_until(dp, w, due + int(DIGEST_GRACE_SECONDS * 1000) + 1000)
        calls = w.calls()
        assert len(calls) == 6
        summary = w.rig.gateway.calls[-1]
        assert summary.recipient == "13800138000"
        await until(lambda: part.offsets.commit_point() == 35)  # one summary finished all 35 items
        assert w.sample("bridge_policy_total", rule="post_liked", policy="digest", action="summary") == 1
        assert w.sample("bridge_messages_total", rule="post_liked", outcome="delivered") == 6


async def test_the_summary_carries_the_count_and_the_first_liker(vtime: VirtualTime) -> None:
    sent: list[Any] = []
    async with world(vtime, [LIKES], "2024-06-03 10:00") as w:
        original = w.rig.gateway.send

        async def record(message: Any) -> Any:
            sent.append(message)
            return await original(message)

        w.rig.gateway.send = record  # type: ignore[method-assign]
        for i in range(12):
            w.take({"type": "like", "to": "13800138000", "actor": f"同学{i}", "post": "p778"})
        await until(lambda: len(w.topic.log) == 7)
        dp, _ = w.deferred_pipeline()
        await run_until(dp, w, w.wall() + 603_000)
        summary = sent[-1]
        data = orjson.loads(summary.json_data)
        assert data == {"title": "同学5 等 7 人赞了你的帖子", "count": 7}
        assert summary.sender == "同学5" and summary.mobile_receiver == "13800138000"
        assert summary.msg_key not in {m.msg_key for m in sent[:-1]}


async def test_duplicate_events_within_the_dedupe_window_make_one_message(vtime: VirtualTime) -> None:
    async with world(vtime, [DEDUPE], "2024-06-03 10:00") as w:
        for _ in range(3):
            w.take({"type": "note", "id": "n1", "to": "13800000001"})
            await asyncio.sleep(10)
        w.take({"type": "note", "id": "n2", "to": "13800000001"})
        await until(lambda: w.source.offsets.commit_point() == 4)
        assert len(w.calls()) == 2
        assert w.sample("bridge_messages_total", rule="note", outcome="dropped_by_policy") == 2
        assert w.sample("bridge_policy_total", rule="note", policy="dedupe", action="drop") == 2


async def test_a_deferral_the_topic_refuses_is_dead_lettered_and_its_offset_waits_for_the_letter(
    vtime: VirtualTime,
) -> None:
    async with world(vtime, [ANNOUNCE], "2024-06-03 03:00") as w:
        w.topic.refuse = True
        w.rig.dlq.hold = asyncio.Event()
        w.take({"type": "announcement", "title": "t", "students": ["13600000001"]})
        await until(lambda: w.stage.pending == 0)
        assert w.source.offsets.commit_point() is None
        w.rig.dlq.hold.set()
        await until(lambda: w.source.offsets.commit_point() == 1)
        [letter] = w.rig.dlq.letters
        assert letter.reason == "deferral_too_large" and letter.rule == "course_announcement"
        assert letter.payload is not None and b"13600000001" in letter.payload


async def test_work_of_a_revoked_partition_is_forgotten_not_committed(vtime: VirtualTime) -> None:
    async with world(vtime, [ANNOUNCE], "2024-06-03 03:00") as w:
        w.topic.hold = asyncio.Event()
        w.take({"type": "announcement", "title": "t", "students": ["13600000001", "13600000002"]})
        w.source.revoked = True  # revoked before the stage decided
        await until(lambda: w.stage.pending == 0)
        assert w.topic.log == [] and w.source.offsets.commit_point() is None


@pytest.mark.parametrize(
    "value",
    [b"", b"not json", b"[]", b'{"v": 2}', b'{"v": 1, "kind": "message", "rule": "r", "policy": "p", "due_ms": 1}'],
    ids=["empty", "not-json", "array", "version", "no-message"],
)
async def test_an_unreadable_deferred_record_is_dead_lettered_not_a_crash(vtime: VirtualTime, value: bytes) -> None:
    async with world(vtime, [ANNOUNCE], "2024-06-03 03:00") as w:
        dp = DeferredPipeline(w.settings, lambda: w.pipeline.rules, w.rig.engine, w.rig.metrics, wall_ms=w.wall)
        part = PartitionState(DEFERRED, 0, PartitionOffsets(10, 0))
        dp.take(part, RecordMeta(DEFERRED, 0, 0, w.wall()), value)
        await until(lambda: part.offsets.commit_point() == 1)
        assert [letter.reason for letter in w.rig.dlq.letters] == ["invalid_deferred"]
