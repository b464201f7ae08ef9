"""Several `bridge run` processes in one consumer group sharing one app quota through a real redis-server.

Rates are measured where the gateway sees them: the simulator's acceptance times of distinct messages.
Windows are kept short (a few seconds at 300/s); the long figures are in `make bench` ("shared quota").
"""

from __future__ import annotations

import bisect
import time
import uuid
from typing import Any

import orjson
from harness import APP_KEY, APP_SECRET, Harness, note, wait_until

from bridge.devstack import BridgeProc
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults

RATE = 300
BURST = 10
EPS = 1e-9


def shared_config(h: Harness, redis_url: str, **delivery: Any) -> dict[str, Any]:
    """The delivery section of a config whose rate limit is one quota shared through Redis."""
    rate_limit = {
        "per_second": delivery.pop("per_second", RATE),
        "burst": delivery.pop("burst", BURST),
        "shared": {"redis_url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex}", "lease": 5},
    }
    return {"max_in_flight": delivery.pop("max_in_flight", 16), "rate_limit": rate_limit, **delivery}


def times(sim: SimGateway) -> list[float]:
    """Acceptance times (epoch seconds) of every distinct message of an in-process simulator, sorted."""
    return sorted(rec.first_received for rec in sim.state.messages.values())


async def accepted_by_process(h: Harness) -> tuple[list[float], set[str]]:
    """Acceptance times (sorted) and event ids of every distinct message of the simulator process."""
    records = await h.sim_process_get("messages")
    ts = sorted(r["first_received"] for r in records)
    return ts, {orjson.loads(r["message"]["json_data"])["id"] for r in records}


async def process_accepted_count(h: Harness) -> int:
    return int((await h.sim_process_get("stats"))["accepted"])


def count_between(ts: list[float], start: float, end: float) -> int:
    return bisect.bisect_left(ts, end) - bisect.bisect_left(ts, start)


def rate_between(ts: list[float], start: float, end: float) -> float:
    return count_between(ts, start, end) / (end - start)


def worst_second(ts: list[float]) -> int:
    """Most acceptances in any one-second window [t, t + 1) starting at an acceptance."""
    return max((bisect.bisect_left(ts, t + 1.0 - EPS) - i for i, t in enumerate(ts)), default=0)


async def start_group(h: Harness, cfg: Any, names: list[str]) -> list[BridgeProc]:
    """Start the instances and wait until each holds exactly one of the three partitions."""
    procs = [await h.start_bridge(cfg, name=n, wait_ready=False) for n in names]
    for p in procs:
        await h.wait_ready(p)

    async def one_each() -> bool:
        held = [(await h.metrics(p)).get("bridge_assigned_partitions", 0) for p in procs]
        return held == [1] * len(procs)

    await wait_until(one_each, 60, "one partition per instance")
    return procs


async def produce_backlog(h: Harness, per_partition: int) -> set[str]:
    """`per_partition` events on each partition (distinct recipients: no ordering wait); their ids."""
    ids: set[str] = set()
    for p in range(h.partitions):
        events = [note(p * 100_000 + i, to=f"139{p:02d}{i:06d}") for i in range(per_partition)]
        await h.produce(events, partition=p)
        ids |= {e["id"] for e in events}
    return ids


def accepted_count(h: Harness) -> int:
    assert h.sim is not None
    return len(h.sim.state.messages)


async def wait_all_accepted(h: Harness, ids: set[str], timeout: float = 60.0) -> None:
    """Until the simulator accepted a message for every id (cheap polling: it runs in this event loop)."""
    await wait_until(lambda: accepted_count(h) >= len(ids), timeout, f"{len(ids)} messages accepted", interval=0.2)
    assert ids <= h.accepted().keys()


async def test_three_instances_share_300_per_second_within_3_percent(harness: Harness, redis_url: str) -> None:
    h = harness
    await h.start_sim_process()  # its own process: acceptance times are not skewed by this test's loop
    cfg = h.config(delivery=shared_config(h, redis_url))
    procs = await start_group(h, cfg, ["bridge-a", "bridge-b", "bridge-c"])
    ids = await produce_backlog(h, 700)

    async def all_accepted() -> bool:
        return await process_accepted_count(h) >= len(ids)

    await wait_until(all_accepted, 60, f"{len(ids)} accepted", interval=0.25)
    ts, got = await accepted_by_process(h)
    assert got == ids
    start, end = ts[0] + 0.5, ts[-1] - 0.5  # the steady part of the backlog
    rate = rate_between(ts, start, end)
    assert abs(rate - RATE) <= RATE * 0.03, f"aggregate {rate:.1f}/s over {end - start:.1f} s"
    assert worst_second(ts) <= RATE * 1.03 + BURST, f"worst second {worst_second(ts)}"
    leases = tokens = 0.0
    for p in procs:
        m = await h.metrics(p)
        assert m["bridge_shared_quota_degraded"] == 0
        assert m["bridge_shared_quota_instances"] == 3
        leases += m["bridge_shared_quota_leases_total"]
        tokens += m["bridge_shared_quota_leased_tokens_total"]
        assert m['bridge_messages_total{outcome="delivered",rule="note"}'] > 500  # each took a fair part
    assert tokens / leases >= 4, "leases of ~5 tokens: Redis sees rate/lease round trips, not one per message"
    await h.wait_committed_to_end()


async def test_a_ban_seen_by_one_instance_stops_the_others(harness: Harness, redis_url: str) -> None:
    h = harness
    quiet = await h.start_sim()  # b and c call this one: it never bans
    strict = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET, faults=Faults(ban_seconds=2))
    await strict.start()  # a calls this one: once limited to 10 calls a second, a's share starts a 2 s ban
    try:
        delivery = shared_config(h, redis_url, per_second=60, burst=5, max_in_flight=4)
        cfg = h.config(delivery=delivery)
        cfg_a = h.config("bridge-a", delivery=delivery, gateway={"url": strict.url})
        a = await h.start_bridge(cfg_a, name="bridge-a", wait_ready=False)
        await start_group(h, cfg, ["bridge-b", "bridge-c"])
        await h.wait_ready(a)

        async def one_each() -> bool:
            return all([(await h.metrics(p)).get("bridge_assigned_partitions") == 1 for p in h.stack.procs])

        await wait_until(one_each, 60, "one partition per instance")
        await produce_backlog(h, 150)
        await wait_until(lambda: len(quiet.state.messages) >= 60, 30, "b and c delivering steadily")
        strict.state.set_faults(strict.state.faults.updated({"qps": 10}))  # a's share is 20/s: over the limit
        await wait_until(lambda: strict.state.throttle.bans >= 1, 30, "a's gateway bans the app")
        ban_end_mono = strict.state.throttle.ban_until
        offset = time.time() - time.monotonic()
        ban_start, ban_end = ban_end_mono - 2 + offset, ban_end_mono + offset
        calls_of_a_during_ban = strict.state.throttle.calls_during_ban
        await wait_until(lambda: time.time() > ban_end + 1.0, 10, "the ban and one second after it")
        ts = times(quiet)
        before = count_between(ts, ban_start - 1.0, ban_start)
        during = count_between(ts, ban_start, ban_end)
        after = count_between(ts, ban_end, ban_end + 1.0)
        assert before >= 20, f"b and c were sending ({before}/s) before the ban"
        # only calls already in flight when the ban began may arrive during it: at most max_in_flight each
        assert during <= 2 * 4, f"b and c made {during} calls during a's ban"
        assert calls_of_a_during_ban <= 4
        assert after >= 10, "b and c resume when the ban is over"
        remote = [(await h.metrics(p)).get("bridge_shared_quota_remote_bans_total", 0) for p in h.stack.procs[-2:]]
        assert all(r >= 1 for r in remote), remote
    finally:
        await h.close()
        await strict.stop()


async def test_an_instance_killed_mid_run_its_partitions_move_nothing_lost_survivors_use_the_quota(
    harness: Harness, redis_url: str
) -> None:
    h = harness
    await h.start_sim_process()
    cfg = h.config(
        delivery=shared_config(h, redis_url), kafka={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    )
    a, b, c = await start_group(h, cfg, ["bridge-a", "bridge-b", "bridge-c"])
    ids = await produce_backlog(h, 1400)

    async def accepted_at_least(n: int) -> bool:
        return await process_accepted_count(h) >= n

    await wait_until(lambda: accepted_at_least(600), 30, "600 delivered before the kill", interval=0.1)
    c.kill()
    killed_at = time.time()

    async def moved() -> bool:
        held = [(await h.metrics(p)).get("bridge_assigned_partitions", 0) for p in (a, b)]
        return sum(held) == 3

    await wait_until(moved, 30, "the killed instance's partition moves to the survivors", interval=0.1)
    moved_at = time.time()
    await wait_until(lambda: accepted_at_least(len(ids)), 60, f"{len(ids)} accepted", interval=0.25)
    ts, got = await accepted_by_process(h)
    assert got == ids, "nothing lost"
    # before the group notices (session timeout 6 s) the two survivors alone use the whole quota ...
    alone = rate_between(ts, killed_at + 0.5, min(killed_at + 5.0, moved_at))
    assert abs(alone - RATE) <= RATE * 0.03, f"survivors alone: {alone:.1f}/s"
    # ... and after the move too, with the dead instance's partition
    start, end = moved_at + 1.0, ts[-1] - 0.5
    assert end - start >= 2.0, "backlog long enough to measure after the move"
    after = rate_between(ts, start, end)
    assert abs(after - RATE) <= RATE * 0.03, f"after the move: {after:.1f}/s"
    assert worst_second(ts) <= RATE * 1.03 + BURST, f"worst second {worst_second(ts)}"
    await h.wait_committed_to_end()


async def test_redis_killed_mid_run_degrades_delivery_continues_and_recovers(harness: Harness) -> None:
    h = harness
    redis = h.stack.start_redis(name="redis-own")
    sim = await h.start_sim()
    cfg = h.config(delivery=shared_config(h, redis.url, per_second=200, burst=5))
    procs = await start_group(h, cfg, ["bridge-a", "bridge-b", "bridge-c"])
    ids = await produce_backlog(h, 600)

    async def degraded(value: int) -> bool:
        return all([(await h.metrics(p)).get("bridge_shared_quota_degraded") == value for p in procs])

    await wait_until(lambda: accepted_count(h) >= 200, 30, "delivering on the shared quota")
    redis.kill()
    await wait_until(lambda: degraded(1), 10, "every instance degraded")
    down_at, down_count = time.time(), accepted_count(h)
    await wait_until(lambda: accepted_count(h) >= down_count + 200, 30, "delivery goes on without Redis")
    up_at = time.time()
    h.stack.start_redis(port=redis.port, name="redis-own-again")
    await wait_until(lambda: degraded(0), 10, "every instance back on the shared quota")
    back_count = accepted_count(h)
    await wait_all_accepted(h, ids)
    assert accepted_count(h) - back_count > 0, "delivered after Redis came back"
    ts = times(sim)
    # without Redis each instance keeps to per_second / live instances (3): the quota still holds
    assert rate_between(ts, down_at + 0.2, up_at) <= 200 * 1.03 + 3 * 5 / (up_at - down_at - 0.2)
    for p in procs:
        log = p.log_path.read_text()
        assert log.count("Redis unreachable") == 1, p.log_tail()
        assert log.count("Redis is back") == 1
        assert '"instances_assumed":3' in log
        m = await h.metrics(p)
        assert m["bridge_shared_quota_degraded"] == 0
        assert (
            m['bridge_shared_quota_redis_errors_total{op="lease"}']
            + m['bridge_shared_quota_redis_errors_total{op="beat"}']
            >= 1
        )
    await h.wait_committed_to_end()
