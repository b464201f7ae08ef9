"""`bridge_ready` (what CampusBridgeNotReady watches) must follow readiness on every scrape of /metrics.

Operators without a readiness prober (a VM, systemd) only ever scrape /metrics; the gauge must not depend on
someone calling /readyz. Uses the real BridgeApp wiring and a real status server on a free port, without
starting Kafka or a gateway (the /metrics cache is off here: the test changes readiness between two scrapes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from bridge.app import BridgeApp
from bridge.delivery import Hold
from bridge.devstack import parse_metrics
from bridge.metrics import Metrics
from bridge.rules.loader import compile_rules
from bridge.settings import parse_settings
from bridge.web import HttpLimits, StatusServer


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


class Client:
    """GETs against a running status server."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session, self.base = session, f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.session.get(self.base + path) as resp:
            return resp.status, await resp.read()


@asynccontextmanager
async def serving(app: BridgeApp) -> AsyncIterator[Client]:
    """The app's registry and readiness behind a real status server (uncached /metrics)."""
    server = StatusServer(app.metrics.registry, app.readiness, "127.0.0.1:0", limits=HttpLimits(cache_seconds=0))
    await server.start()
    assert server.port is not None
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(session, server.port)
    finally:
        await server.stop()


async def scrape(client: Client) -> dict[str, float]:
    """GET /metrics, parsed."""
    status, body = await client.get("/metrics")
    assert status == 200
    return parse_metrics(body.decode())


async def test_ready_gauge_follows_readiness_without_readyz(app: BridgeApp) -> None:
    async with serving(app) as client:
        assert (await scrape(client))["bridge_ready"] == 1.0, "healthy, /readyz never called"
        app.engine._hold = Hold("systemic", "code_25", "code=25 msg=Invalid signature", 0.0)  # a systemic answer
        assert (await scrape(client))["bridge_ready"] == 0.0, "paused, /readyz not called since"


async def test_ready_gauge_matches_readyz(app: BridgeApp) -> None:
    """Once /readyz is asked, the gauge agrees with its answer (the part that works today)."""
    async with serving(app) as client:
        assert (await client.get("/readyz"))[0] == 200
        assert (await scrape(client))["bridge_ready"] == 1.0
        app.engine._hold = Hold("systemic", "code_25", "code=25 msg=Invalid signature", 0.0)
        status, body = await client.get("/readyz")
        assert status == 503
        assert "paused: gateway systemic error (code_25)" in orjson.loads(body)["reasons"]
        assert (await scrape(client))["bridge_ready"] == 0.0
