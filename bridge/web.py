"""The daemon's HTTP endpoints: /metrics (Prometheus text), /healthz (loop alive), /readyz (can deliver)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], tuple[bool, dict[str, object]]]

HEARTBEAT_SECONDS = 1.0
STALL_SECONDS = 10.0


class StatusServer:
    """Serves the endpoints on the daemon's own event loop."""

    def __init__(self, registry: CollectorRegistry, readiness: Readiness, listen: str) -> None:
        self._registry = registry
        self._readiness = readiness
        host, _, port = listen.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._runner: web.AppRunner | None = None
        self._beat = time.monotonic()
        self._beat_task: asyncio.Task[None] | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Bind and serve; `port` holds the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._beat_task = asyncio.create_task(self._heartbeat())

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._beat_task is not None:
            self._beat_task.cancel()
            self._beat_task = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._readiness()  # refreshes bridge_ready, so a scrape sees readiness without a /readyz prober
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        stalled = time.monotonic() - self._beat
        if stalled > STALL_SECONDS:
            body = {"status": "stalled", "event_loop_lag_seconds": round(stalled, 1)}
            return web.Response(status=503, body=orjson.dumps(body), content_type="application/json")
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, detail = self._readiness()
        body = orjson.dumps({"ready": ok, **detail})
        return web.Response(status=200 if ok else 503, body=body, content_type="application/json")
