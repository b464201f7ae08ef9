"""Policy state shared through a real redis-server (issue 15): several instances, one cap, one digest window."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from bridge.devstack import LocalStack, free_port
from bridge.metrics import Metrics
from bridge.policy.decide import Decision, Subject, recipient_tag
from bridge.policy.redis_store import RETRY_REDIS_SECONDS, RedisPolicyStore
from bridge.policy.store import MemoryPolicyStore
from bridge.rules import compile_rules
from bridge.rules.policies import RulePolicy

MESSAGE = {"event_type": "mobile_receiver", "mobile_receiver": "{{ event.to }}"}
DIGEST = {"window_seconds": 300, "message": {"json_data": {"title": "{{ count }}"}}}
T0 = 1_717_380_000_000
PHONE = "13800138000"


def policy(**keys: Any) -> RulePolicy:
    return compile_rules([{"id": "likes", "when": True, "message": MESSAGE, **keys}]).policies["likes"]


StoreFactory = Callable[..., Awaitable[tuple[RedisPolicyStore, Metrics]]]


@pytest.fixture
async def stores() -> AsyncIterator[StoreFactory]:
    """Factory of started RedisPolicyStores (closed at the end)."""
    made: list[RedisPolicyStore] = []

    async def make(url: str, prefix: str, *, timeout: float = 0.25) -> tuple[RedisPolicyStore, Metrics]:
        metrics = Metrics(CollectorRegistry())
        store = RedisPolicyStore(url=url, prefix=prefix, timeout=timeout, metrics=metrics)
        await store.start()
        made.append(store)
        return store, metrics

    yield make
    for store in made:
        await store.close()


def subject(i: int, to: str = PHONE, dedupe: str | None = None) -> Subject:
    return Subject("likes", recipient_tag(to), f"like-{i}", dedupe)


async def test_two_instances_share_one_cap_and_one_digest_window(redis_url: str, stores: StoreFactory) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    (a, _), (b, _) = await stores(redis_url, prefix), await stores(redis_url, prefix)
    p = policy(limit={"per_recipient": 5, "per_seconds": 600, "over": "digest"}, digest=DIGEST)
    decisions: list[Decision] = []
    for i in range(40):  # 40 likes in a minute, alternately through two instances
        store = a if i % 2 == 0 else b
        decisions.append(await store.decide(p, subject(i), T0 + i * 1500))
    reference = MemoryPolicyStore()
    expected = [reference.decide_now(p, subject(i), T0 + i * 1500) for i in range(40)]
    assert decisions == expected  # the same pure decisions, the state in Redis instead of a dict
    assert [d.action for d in decisions].count("send") == 5
    assert {d.window for d in decisions if d.action == "fold"} == {"like-5"}
    assert not a.degraded and not b.degraded


async def test_concurrent_decisions_for_one_recipient_keep_the_cap(redis_url: str, stores: StoreFactory) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    # four instances deciding at once for one recipient, each one decision at a time (as the policy stage does):
    # their transactions interleave on the same keys, and a refused EXEC is decided again
    instances = [(await stores(redis_url, prefix, timeout=2.0))[0] for _ in range(4)]
    p = policy(limit={"per_recipient": 7, "per_seconds": 600})

    async def instance(n: int) -> list[Decision]:
        return [await instances[n].decide(p, subject(n * 100 + i), T0 + i) for i in range(15)]

    decisions = [d for batch in await asyncio.gather(*(instance(n) for n in range(4))) for d in batch]
    assert [d.action for d in decisions].count("send") == 7
    assert all(not s.degraded for s in instances)


async def test_dedupe_across_instances_and_keys_hold_no_phone_number(redis_url: str, stores: StoreFactory) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    (a, _), (b, _) = await stores(redis_url, prefix), await stores(redis_url, prefix)
    p = policy(dedupe={"key": "{{ event.id }}", "window_seconds": 60})
    assert (await a.decide(p, subject(1, dedupe="evt-1"), T0)).action == "send"
    assert (await b.decide(p, subject(2, dedupe="evt-1"), T0 + 1000)).action == "drop"
    assert (await b.decide(p, subject(1, dedupe="evt-1"), T0 + 2000)).action == "send"  # itself again
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in await client.keys(f"{prefix}:*")]
        assert len(keys) == 1 and PHONE not in keys[0] and "evt-1" not in keys[0]
        assert 0 < await client.pttl(keys[0]) <= 60_000
    finally:
        await client.aclose()


async def test_with_redis_down_decisions_go_on_in_process_and_redis_is_used_again_when_back(
    stores: StoreFactory, tmp_path: Path
) -> None:
    port = free_port()
    p = policy(limit={"per_recipient": 2, "per_seconds": 600})
    with LocalStack(tmp_path) as stack:
        store, metrics = await stores(f"redis://127.0.0.1:{port}/0", f"test-{uuid.uuid4().hex}", timeout=0.2)
        assert store.degraded  # nothing listens yet: started degraded, without failing
        assert [(await store.decide(p, subject(i), T0 + i)).action for i in range(3)] == ["send", "send", "drop"]
        assert metrics.registry.get_sample_value("bridge_policy_state_degraded") == 1
        errors = metrics.registry.get_sample_value("bridge_policy_state_errors_total") or 0
        assert errors <= 1  # one attempt at start, then Redis is left alone for a second

        await asyncio.to_thread(stack.start_redis, port=port)
        await asyncio.sleep(RETRY_REDIS_SECONDS + 0.1)
        decision = await store.decide(p, subject(10, to="13900000000"), T0 + 10)
        assert decision.action == "send" and not store.degraded
        assert metrics.registry.get_sample_value("bridge_policy_state_degraded") == 0
