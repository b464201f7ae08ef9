"""`bridge_ready` (what CampusBridgeNotReady watches) must follow readiness on every scrape of /metrics.

Operators without a readiness prober (a VM, systemd) only ever scrape /metrics; the gauge must not depend on
someone calling /readyz. Uses the real BridgeApp wiring and its aiohttp app, without starting Kafka or a gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from bridge.app import BridgeApp
from bridge.delivery import Hold
from bridge.devstack import parse_metrics
from bridge.metrics import Metrics
from bridge.rules.loader import compile_rules
from bridge.settings import parse_settings


@pytest.fixture
async def app() -> AsyncIterator[BridgeApp]:
    """A BridgeApp that believes it is running normally (started, partitions assigned, DLQ producer up)."""
    settings = parse_settings(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"]},
            "gateway": {"url": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s"},
            "metrics": {"listen": "127.0.0.1:0"},
        },
        env={},
    )
    bridge = BridgeApp(settings, compile_rules([]), metrics=Metrics(CollectorRegistry()))
    bridge.source._consumer = object()  # type: ignore[assignment]  # connected
    bridge.source.assigned_once = True
    bridge.dlq.problem = None
    yield bridge
    bridge.source._consumer = None
    await bridge.client.close()


async def scrape(client: TestClient) -> dict[str, float]:
    """GET /metrics, parsed."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    return parse_metrics(await resp.text())


async def test_ready_gauge_follows_readiness_without_readyz(app: BridgeApp) -> None:
    async with TestClient(TestServer(app.status.app())) as client:
        assert (await scrape(client))["bridge_ready"] == 1.0, "healthy, /readyz never called"
        app.engine._hold = Hold("systemic", "code_25", "code=25 msg=Invalid signature", 0.0)  # a systemic answer
        assert (await scrape(client))["bridge_ready"] == 0.0, "paused, /readyz not called since"


async def test_ready_gauge_matches_readyz(app: BridgeApp) -> None:
    """Once /readyz is asked, the gauge agrees with its answer (the part that works today)."""
    async with TestClient(TestServer(app.status.app())) as client:
        assert (await client.get("/readyz")).status == 200
        assert (await scrape(client))["bridge_ready"] == 1.0
        app.engine._hold = Hold("systemic", "code_25", "code=25 msg=Invalid signature", 0.0)
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert "paused: gateway systemic error (code_25)" in (await resp.json())["reasons"]
        assert (await scrape(client))["bridge_ready"] == 0.0
