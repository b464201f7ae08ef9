"""Rule policies in the running daemon on the real broker (issue 15): quiet hours through a restart, a capped
like storm digested across two instances sharing Redis, duplicates de-duplicated — nothing lost in any of them:
every source offset is committed, and so is every record of the deferred topic once its message went out.
"""

from __future__ import annotations

import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from harness import Harness, wait_until

from bridge.devstack import BridgeProc

WINDOW_SECONDS = 10


def three_am_zone() -> ZoneInfo:
    """A fixed-offset zone in which it is 3 a.m. now (Etc/GMT-N is UTC+N)."""
    n = (3 - datetime.now(UTC).hour) % 24
    n = n - 24 if n > 14 else n
    return ZoneInfo(f"Etc/GMT{'-' if n >= 0 else '+'}{abs(n)}")


def announcement_rule(quiet: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "course_announcement",
        "when": "event.type == 'course.announcement.published'",
        "for_each": "event.students",
        "quiet_hours": {**quiet, "action": "defer"},
        "message": {
            "event_type": "mobile_receiver",
            "mobile_receiver": "{{ item }}",
            "action": "announce",
            "json_data": {"title": "{{ event.title }}"},
        },
    }


def sim_messages(h: Harness) -> list[Any]:
    assert h.sim is not None
    return list(h.sim.state.messages.values())


async def group_committed(h: Harness, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=h.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def topic_ends(h: Harness, topic: str, partitions: int = 1) -> dict[int, int]:
    c = AIOKafkaConsumer(bootstrap_servers=h.bootstrap)
    await c.start()
    try:
        ends = await c.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await c.stop()


async def wait_group_committed_to_end(h: Harness, group: str, topic: str, timeout: float = 60) -> dict[int, int]:
    ends = {p: e for p, e in (await topic_ends(h, topic)).items() if e > 0}

    async def done() -> bool:
        committed = await group_committed(h, group, topic)
        return all(committed.get(p) == e for p, e in ends.items())

    await wait_until(done, timeout, f"group {group} committed {topic} to {ends}", interval=0.2)
    return ends


def config(h: Harness, deferred: str, rules: list[dict[str, Any]], **over: Any) -> Any:
    kafka = {"deferred_topic": deferred, **over.pop("kafka", {})}
    return h.config(kafka=kafka, rules={"inline": rules}, **over)


async def test_a_3am_fanout_is_deferred_through_a_restart_and_delivered_when_the_quiet_window_ends(
    harness: Harness, new_topic: Any
) -> None:
    h = harness
    await h.start_sim()
    deferred = await new_topic(1, prefix="deferred")
    zone = three_am_zone()
    far = {"from": "15:00:00", "to": "15:00:01", "timezone": zone.key}  # not now: the daemon starts idle
    cfg = config(h, deferred, [announcement_rule(far)], logging={"level": "DEBUG"})
    proc = await h.start_bridge(cfg)

    # the quiet window: from a second ago to WINDOW_SECONDS from now, at 3 a.m. local time
    now = datetime.now(zone)
    end = now + timedelta(seconds=WINDOW_SECONDS)
    quiet = {"from": (now - timedelta(seconds=1)).strftime("%H:%M:%S"), "to": end.strftime("%H:%M:%S")}
    assert now.hour == 3 and quiet["from"] < quiet["to"]
    config(h, deferred, [announcement_rule({**quiet, "timezone": zone.key})], logging={"level": "DEBUG"})
    proc.signal(signal.SIGHUP)
    await wait_until(
        lambda: _metric(h, proc, 'bridge_rules_reload_total{result="ok"}'), 20, "the quiet window in force"
    )
    students = [f"1360000{i:04d}" for i in range(300)]
    await h.produce([{"type": "course.announcement.published", "title": "期中考试时间调整", "students": students}])

    async def all_deferred() -> bool:
        return sum((await topic_ends(h, deferred)).values()) == 300

    await wait_until(all_deferred, 20, "300 messages on the deferred topic")
    await h.wait_committed_to_end(timeout=20)  # the source offset moved: the deferral is durable
    m = await h.metrics(proc)
    assert m['bridge_policy_total{action="defer",policy="quiet_hours",rule="course_announcement"}'] == 300
    assert sim_messages(h) == []
    assert time.time() < end.timestamp(), "the deferral took the whole window: nothing left to test"
    proc.kill()  # a crash before the messages are due

    restarted = await h.start_bridge(cfg, name="bridge-restarted")
    await wait_until(lambda: len(sim_messages(h)) == 300, 60, "300 announcements delivered")
    got = sim_messages(h)
    assert {r.message["mobile_receiver"] for r in got} == set(students)
    assert all(r.count == 1 for r in got), "each delivered once"
    assert min(r.first_received for r in got) >= end.timestamp() - 0.001, "nothing before the window ended"
    await wait_group_committed_to_end(h, f"{h.group}.deferred", deferred)
    m = await h.metrics(restarted)
    assert m['bridge_messages_total{outcome="delivered",rule="course_announcement"}'] == 300
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert restarted.stop() == 0


LIKES: dict[str, Any] = {
    "id": "post_liked",
    "when": "event.type == 'post.liked'",
    "limit": {"per_recipient": 5, "per_seconds": 10, "over": "digest"},
    "digest": {
        "window_seconds": 5,
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
        "json_data": {"title": "{{ event.actor }} 赞了你的帖子", "like": "{{ event.id }}"},
    },
}


async def test_40_likes_to_one_student_through_two_instances_keep_the_cap_and_make_one_summary(
    harness: Harness, new_topic: Any, redis_url: str
) -> None:
    h = harness
    await h.start_sim()
    deferred = await new_topic(1, prefix="deferred")
    state = {"store": "redis", "redis": {"redis_url": redis_url}, "key_prefix": f"test-{uuid.uuid4().hex}"}
    cfg = config(h, deferred, [LIKES], delivery={"policy_state": state})
    a = await h.start_bridge(cfg, name="bridge-a", wait_ready=False)
    b = await h.start_bridge(cfg, name="bridge-b", wait_ready=False)
    for proc in (a, b):
        await h.wait_ready(proc)

    async def split() -> bool:
        held = [(await h.metrics(p)).get("bridge_assigned_partitions", 0) for p in (a, b)]
        return sorted(held) == [1, 2]

    await wait_until(split, 60, "the source partitions split between the two instances")
    likes = [{"type": "post.liked", "id": f"l{i}", "to": "13800138000", "actor": f"同学{i:02d}"} for i in range(40)]
    await h.produce(likes, key=lambda e: e["id"].encode())  # spread over the partitions, so over both instances
    await wait_until(lambda: len(sim_messages(h)) == 6, 60, "5 likes and one summary")
    await h.wait_committed_to_end(timeout=30)
    await wait_group_committed_to_end(h, f"{h.group}.deferred", deferred)

    got = sorted(sim_messages(h), key=lambda r: r.first_received)
    summaries = [r for r in got if "count" in orjson.loads(r.message["json_data"])]
    assert len(summaries) == 1 and summaries[0] is got[-1]
    data = orjson.loads(summaries[0].message["json_data"])
    assert data["count"] == 35 and data["title"].endswith("等 35 人赞了你的帖子")
    assert all(r.count == 1 for r in got)
    times = [r.first_received for r in got]
    assert all(t2 - t1 >= 10 - 0.05 for t1, t2 in zip(times, times[5:], strict=False)), "the cap: 5 per 10 s"
    stats = [await h.metrics(p) for p in (a, b)]
    total = sum(s.get('bridge_policy_total{action="fold",policy="digest",rule="post_liked"}', 0) for s in stats)
    assert total == 35
    assert sum(s.get('bridge_policy_total{action="summary",policy="digest",rule="post_liked"}', 0) for s in stats) == 1
    assert all(s.get("bridge_policy_state_degraded", 0) == 0 for s in stats)
    assert a.stop() == 0 and b.stop() == 0


async def test_duplicate_events_within_the_dedupe_window_make_one_message_each(
    harness: Harness, new_topic: Any
) -> None:
    h = harness
    await h.start_sim()
    deferred = await new_topic(1, prefix="deferred")
    rule = {
        "id": "grade_posted",
        "when": "event.type == 'grade.posted'",
        "dedupe": {"key": "{{ event.id }}", "window_seconds": 3600},
        "message": {
            "event_type": "mobile_receiver",
            "mobile_receiver": "{{ event.to }}",
            "json_data": {"id": "{{ event.id }}"},
        },
    }
    proc = await h.start_bridge(config(h, deferred, [rule]))
    events = [{"type": "grade.posted", "id": f"g{i % 4}", "to": "13700000001"} for i in range(10)]
    await h.produce(events, key=lambda e: e["id"].encode())  # the source emits each event two or three times
    await wait_until(lambda: len(sim_messages(h)) == 4, 30, "one message per distinct event")
    await h.wait_committed_to_end(timeout=30)
    m = await h.metrics(proc)
    assert m['bridge_messages_total{outcome="dropped_by_policy",rule="grade_posted"}'] == 6
    assert m['bridge_policy_total{action="drop",policy="dedupe",rule="grade_posted"}'] == 6
    assert {orjson.loads(r.message["json_data"])["id"] for r in sim_messages(h)} == {"g0", "g1", "g2", "g3"}
    assert all(r.count == 1 for r in sim_messages(h))
    assert proc.stop() == 0


async def _metric(h: Harness, proc: BridgeProc, name: str) -> float:
    return (await h.metrics(proc)).get(name, 0.0)
