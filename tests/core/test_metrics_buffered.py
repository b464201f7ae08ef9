"""Hot-path metrics are buffered and applied in bulk: what a collection sees is what per-update calls give."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from bridge.metrics import E2E_BUCKETS, FLUSH_AT, Metrics, observe_many


def samples(registry: CollectorRegistry) -> list[str]:
    """The exposition without the `_created` timestamps (two registries never share those)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("h_seconds", "test", ["rule"], buckets=E2E_BUCKETS, registry=registry)


@pytest.mark.parametrize(
    "values",
    [[], [0.3], [0.0, 0.005, 0.0051, 0.01, 1, 2.4, 2.5, 3599, 3600, 7200, -1.0], [0.02] * 7 + [math.nan]],
    ids=["empty", "one", "edges", "repeats-and-nan"],
)
def test_observe_many_equals_one_observe_per_value(values: list[float]) -> None:
    one_by_one, h1 = _histogram()
    together, h2 = _histogram()
    child = h1.labels("r")
    for v in values:
        child.observe(v)
    observe_many(h2.labels("r"), values)
    assert samples(together) == samples(one_by_one)


def test_buffered_hot_path_updates_are_all_visible_to_every_collection() -> None:
    m = Metrics(CollectorRegistry())
    for i in range(300):  # more than one flush's worth of observations, and a remainder
        m.delivered_after("r", i / 1000)
        m.message_final("r", "delivered")
        m.limiter_waited(0.0)
    value = m.registry.get_sample_value
    assert value("bridge_event_to_delivery_seconds_count", {"rule": "r"}) == 300
    expected_sum = sum(i / 1000 for i in range(300))
    assert value("bridge_event_to_delivery_seconds_sum", {"rule": "r"}) == pytest.approx(expected_sum)
    assert value("bridge_messages_total", {"rule": "r", "outcome": "delivered"}) == 300
    assert value("bridge_rate_limit_wait_seconds_count") == 300
    m.message_final("r", "delivered")
    assert b'bridge_messages_total{outcome="delivered",rule="r"} 301.0' in generate_latest(m.registry)


def test_disabled_metrics_take_the_buffered_updates_too() -> None:
    m = Metrics(enabled=False)
    for _ in range(FLUSH_AT + 1):
        m.delivered_after("r", 0.1)
        m.gateway_call("delivered", "0", "", 0.01)
        m.limiter_waited(0.0)
    assert m.registry.get_sample_value("bridge_messages_total", {"rule": "r", "outcome": "delivered"}) is None
