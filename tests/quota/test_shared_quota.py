"""SharedQuota (the Limiter) against a real redis-server, in one process: leases, shared bans, degraded mode."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.devstack import LocalStack, free_port
from bridge.flow.quota_store import RedisQuotaStore
from bridge.flow.shared_quota import BEAT_SECONDS, SharedQuota
from bridge.metrics import Metrics


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    got = m.registry.get_sample_value(name, labels or {})
    return 0.0 if got is None else got


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.01)


QuotaFactory = Callable[..., Awaitable[tuple[SharedQuota, Metrics]]]


@pytest.fixture
async def quotas() -> AsyncIterator[QuotaFactory]:
    """Factory of started SharedQuota instances (stopped at the end)."""
    made: list[SharedQuota] = []

    async def make(url: str, prefix: str, member: str, **kw: Any) -> tuple[SharedQuota, Metrics]:
        metrics = Metrics(CollectorRegistry())
        store = RedisQuotaStore(url=url, prefix=prefix, timeout=kw.pop("timeout", 0.25), metrics=metrics)
        q = SharedQuota(
            store,
            rate=kw.pop("rate", 1000.0),
            burst=kw.pop("burst", 10),
            lease=kw.pop("lease", 5),
            member=member,
            metrics=metrics,
            **kw,
        )
        made.append(q)
        await q.start()
        return q, metrics

    try:
        yield make
    finally:
        for q in made:
            await q.stop()


def prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_leases_take_several_tokens_per_round_trip(redis_url: str, quotas: QuotaFactory) -> None:
    q, m = await quotas(redis_url, prefix(), "a", rate=2000.0, burst=10, lease=5)

    async def caller() -> None:
        for _ in range(10):
            await q.acquire()

    await asyncio.gather(*(caller() for _ in range(20)))  # 200 tokens, 20 callers always waiting
    leases = value(m, "bridge_shared_quota_leases_total")
    assert value(m, "bridge_shared_quota_leased_tokens_total") >= 200
    assert leases <= 200 / 5 + 2
    assert value(m, "bridge_shared_quota_redis_duration_seconds_count", {"op": "lease"}) == leases


async def test_a_batch_larger_than_the_lease_and_a_new_rate_are_honoured(redis_url: str, quotas: QuotaFactory) -> None:
    q, m = await quotas(redis_url, prefix(), "a", rate=1000.0, burst=10, lease=5)
    await q.acquire(12)
    assert value(m, "bridge_shared_quota_leased_tokens_total") == 12
    q.set_rate(50.0, 5)
    started = time.monotonic()
    for _ in range(20):
        await q.acquire()
    # at 50/s with a burst of 5 the 20 tokens cannot come faster than 15 intervals (never early)
    assert time.monotonic() - started >= 15 / 50 - 0.01


async def test_a_ban_by_one_instance_holds_every_other(redis_url: str, quotas: QuotaFactory) -> None:
    p = prefix()
    a, ma = await quotas(redis_url, p, "a")
    b, mb = await quotas(redis_url, p, "b")
    await b.acquire()
    a.ban(0.5)
    await wait_for(lambda: b.banned_for() > 0.3, 1.0, "b hears of a's ban (pub/sub)")
    started = time.monotonic()
    await b.acquire()
    assert time.monotonic() - started >= 0.3
    assert value(mb, "bridge_shared_quota_remote_bans_total") == 1
    assert value(ma, "bridge_shared_quota_remote_bans_total") == 0  # its own ban echoed back is not news
    a.ban(1.0)
    await wait_for(lambda: b.banned_for() > 0.8, 1.0, "b hears of the second ban")
    c, _ = await quotas(redis_url, p, "c")  # started during the ban: learns it from its first heartbeat
    assert c.banned_for() > 0.5


async def test_redis_gone_means_a_local_share_then_back_to_the_shared_quota(
    tmp_path: Path, quotas: QuotaFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.quota")
    with LocalStack(tmp_path) as stack:
        redis = stack.start_redis()
        p = prefix()
        a, ma = await quotas(redis.url, p, "a", rate=400.0, burst=8)
        b, _ = await quotas(redis.url, p, "b", rate=400.0, burst=8)
        await wait_for(lambda: a.instances == 2, 3 * BEAT_SECONDS, "a sees both instances")
        await a.acquire()
        assert not a.degraded
        redis.kill()
        for _ in range(20):  # delivery goes on without Redis
            await a.acquire()
        assert a.degraded
        assert value(ma, "bridge_shared_quota_degraded") == 1
        assert value(ma, "bridge_shared_quota_redis_errors_total", {"op": "lease"}) >= 1
        await wait_for(lambda: b.degraded, 3 * BEAT_SECONDS, "b degraded too (at its heartbeat)")
        for _ in range(20):
            await a.acquire()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Redis unreachable" in r.message]
        assert len(warnings) == 2  # one per instance, not one per call or heartbeat
        for record in warnings:
            ctx = record.__dict__["ctx"]
            assert (ctx["local_per_second"], ctx["instances_assumed"]) == (200.0, 2)
            assert ctx["instances_from"] == "live instances last seen in Redis"

        stack.start_redis(port=redis.port)  # back, empty (no persistence): the script is loaded again
        await wait_for(lambda: not a.degraded and not b.degraded, 3 * BEAT_SECONDS, "both back on the quota")
        assert value(ma, "bridge_shared_quota_degraded") == 0
        leases = value(ma, "bridge_shared_quota_leases_total")
        for _ in range(20):
            await a.acquire()
        assert value(ma, "bridge_shared_quota_leases_total") > leases
        assert [r.message for r in caplog.records].count(
            "shared quota: Redis is back, using the shared quota again"
        ) == 2


async def test_redis_down_at_start_uses_expected_instances(quotas: QuotaFactory) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    q, m = await quotas(url, prefix(), "a", rate=100.0, burst=4, expected_instances=4)
    assert q.degraded
    assert value(m, "bridge_shared_quota_degraded") == 1
    started = time.monotonic()
    for _ in range(6):  # local share: 25/s with a burst of 1 -> 5 intervals of 40 ms at least
        await q.acquire()
    assert time.monotonic() - started >= 5 / 25 - 0.01
