"""The shared quota's Lua script on a real redis-server, on virtual time (`now` is passed into the script).

Instances are simulated one round trip at a time, in the order of their virtual clocks, so every figure here
is exact and deterministic: the GCRA math in Redis, leases, bans moving the schedule, live members.
"""

from __future__ import annotations

import bisect
import heapq
import uuid
from collections.abc import AsyncIterator

import pytest

from bridge.flow.quota_store import RedisQuotaStore
from bridge.metrics import Metrics

EPS = 1e-6


class VirtualNow:
    """The `now` the script sees."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def vstore(redis_url: str) -> AsyncIterator[tuple[RedisQuotaStore, VirtualNow]]:
    now = VirtualNow()
    store = RedisQuotaStore(url=redis_url, prefix=f"test-{uuid.uuid4().hex}", timeout=2.0, metrics=Metrics(), now=now)
    await store.start()
    try:
        yield store, now
    finally:
        await store.close()


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """Most events inside any window [t, t + width) starting at an event."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + width - EPS) - i for i, t in enumerate(ordered)), default=0)


async def run_instances(
    store: RedisQuotaStore, now: VirtualNow, *, instances: int, rate: float, burst: int, lease: int, until: float
) -> dict[int, list[float]]:
    """Each instance leases `lease` tokens, uses them all when they become usable, and leases again at once.

    Returns the virtual times at which each instance used a token (a backlog everywhere: always demand).
    """
    start = now.t
    used: dict[int, list[float]] = {i: [] for i in range(instances)}
    ready = [(start, i) for i in range(instances)]
    heapq.heapify(ready)
    while ready:
        t, i = heapq.heappop(ready)
        if t >= start + until:
            continue
        now.t = t
        got = await store.lease(lease, rate, burst)
        assert got.ban_left == 0
        assert got.granted == lease
        go = t + got.wait
        used[i].extend([go] * got.granted)
        heapq.heappush(ready, (go, i))
    return used


async def test_three_instances_share_the_rate_exactly_with_bounded_bursts(
    vstore: tuple[RedisQuotaStore, VirtualNow],
) -> None:
    store, now = vstore
    start = now.t
    used = await run_instances(store, now, instances=3, rate=300, burst=10, lease=5, until=20.0)
    times = sorted(t - start for ts in used.values() for t in ts)
    steady = [t for t in times if 2.0 <= t < 18.0]
    assert abs(len(steady) - 300 * 16) <= 5  # one lease of rounding at each edge
    assert max_in_window(times) <= 300 + 10
    for ts in used.values():  # leases go round: each instance gets its third
        share = len([t for t in ts if start + 2.0 <= t < start + 18.0])
        assert abs(share - 1600) <= 10


async def test_a_lease_goes_only_when_its_last_token_conforms(vstore: tuple[RedisQuotaStore, VirtualNow]) -> None:
    store, now = vstore
    first = await store.lease(10, 100, 10)  # an idle schedule: one full burst at once
    assert (first.granted, first.wait) == (10, 0.0)
    second = await store.lease(5, 100, 10)  # the schedule is a full burst ahead: 5 more slots of 10 ms
    assert second.wait == pytest.approx(0.05, abs=EPS)
    now.t += 10.0  # idle: no more than one burst is banked
    third = await store.lease(12, 100, 10)  # larger than the burst: goes once the schedule is empty
    assert third.wait == 0.0
    fourth = await store.lease(1, 100, 10)
    assert fourth.wait == pytest.approx(0.12 - 0.09, abs=EPS)


async def test_a_ban_stops_every_lease_and_the_rate_resumes_with_one_burst(
    vstore: tuple[RedisQuotaStore, VirtualNow],
) -> None:
    store, now = vstore
    start = now.t
    await run_instances(store, now, instances=2, rate=100, burst=5, lease=5, until=1.0)
    now.t = start + 1.0
    assert await store.ban(3.0, "a") == pytest.approx(3.0)
    assert await store.ban(1.0, "b") == pytest.approx(3.0)  # never shortened
    now.t += 1.0
    during = await store.lease(5, 100, 5)
    assert (during.granted, during.ban_left) == (0, pytest.approx(2.0))
    beat = await store.beat("a", 5.0)
    assert beat.ban_left == pytest.approx(2.0)
    ban_end = start + 4.0
    now.t = ban_end
    after = await run_instances(store, now, instances=2, rate=100, burst=5, lease=5, until=1.0)
    times = sorted(t for ts in after.values() for t in ts)
    assert times[0] >= ban_end - EPS
    assert len([t for t in times if t < ban_end + EPS]) == 5  # one burst at the end of the ban, no backlog
    assert max_in_window(times) <= 100 + 5


async def test_live_members_are_counted_and_silent_ones_drop_out(vstore: tuple[RedisQuotaStore, VirtualNow]) -> None:
    store, now = vstore
    assert (await store.beat("a", 5.0)).instances == 1
    assert (await store.beat("b", 5.0)).instances == 2
    now.t += 3.0
    assert (await store.beat("c", 5.0)).instances == 3
    now.t += 3.0  # a and b silent for 6 s
    assert (await store.beat("c", 5.0)).instances == 1
    await store.leave("c")
    assert (await store.beat("d", 5.0)).instances == 1
