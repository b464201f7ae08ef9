"""Fixtures for the gateway tests: a real simulated gateway on loopback, settings, messages, raw requests.

- ``sim`` (function): a running ``SimGateway`` (app key ``APP_KEY``, secret ``APP_SECRET``) on 127.0.0.1,
  free port, default faults; stopped after the test.
- ``make_sim``: async factory for a sim with chosen faults / clocks (all stopped after the test).
- ``gateway_settings(url, **overrides)`` and ``message(**overrides)``: plain factories.
- ``http``: an aiohttp ClientSession for raw requests (control API, hand-made gateway calls).
- ``signed_params(...)``: system + business parameters signed like a correct client would.
- ``serve(app, ssl_context=None)``: an aiohttp app served on a free port of 127.0.0.1 (async context manager
  yielding the gateway URL `http(s)://127.0.0.1:PORT/router/rest`).
"""

from __future__ import annotations

import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.gateway.protocol import BUSINESS_PARAM, METHOD, SIGN_METHODS, format_timestamp
from bridge.gateway.sign import sign
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults
from bridge.models import MobileReceiverMessageEvent
from bridge.settings import GatewaySettings

APP_KEY = "test-app"
APP_SECRET = "test-secret"
MOBILE = "13800000000"

SimFactory = Callable[..., Awaitable[SimGateway]]


def gateway_settings(url: str, **overrides: Any) -> GatewaySettings:
    """GatewaySettings for the test app pointing at `url`."""
    data: dict[str, Any] = {"url": url, "app_key": APP_KEY, "app_secret": APP_SECRET, "timeout_seconds": 5.0}
    data.update(overrides)
    return GatewaySettings.model_validate(data)


def message(**overrides: Any) -> MobileReceiverMessageEvent:
    """A valid mobile_receiver message with a fresh msg_key."""
    data: dict[str, Any] = {
        "msg_key": str(uuid.uuid4()),
        "event_time_millis": int(time.time() * 1000),
        "event_type": "mobile_receiver",
        "mobile_receiver": MOBILE,
        "json_data": '{"course":"CS101","room":"A-204"}',
        "resource_url": "https://campus.example/p/1?x=1&y=2 z",
    }
    data.update(overrides)
    return MobileReceiverMessageEvent(**data)


def signed_params(
    event: dict[str, Any] | str | None = None,
    *,
    secret: str = APP_SECRET,
    sign_method: str = "hmac-sha256",
    now: float | None = None,
    drop: tuple[str, ...] = (),
    **overrides: str,
) -> dict[str, str]:
    """All request parameters, signed; `overrides` replace values before signing, `drop` removes names."""
    params = {
        "method": METHOD,
        "app_key": APP_KEY,
        "timestamp": format_timestamp(time.time() if now is None else now),
        "v": "2.0",
        "format": "json",
        "sign_method": sign_method,
    }
    if event is None:
        event = message().to_api_dict()
    params[BUSINESS_PARAM] = event if isinstance(event, str) else _compact(event)
    params.update(overrides)
    for name in drop:
        params.pop(name, None)
    method = params.get("sign_method", "md5")
    params["sign"] = sign(params, secret, method if method in SIGN_METHODS else "md5")
    return params


def _compact(obj: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps(obj).decode()


@pytest.fixture
async def sim() -> AsyncIterator[SimGateway]:
    """A running simulated gateway with default faults."""
    async with SimGateway(app_key=APP_KEY, app_secret=APP_SECRET) as gateway:
        yield gateway


@pytest.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    """Factory: `await make_sim(faults=Faults(...), clock=..., monotonic=...)`; all are stopped afterwards."""
    started: list[SimGateway] = []

    async def factory(faults: Faults | None = None, **kwargs: Any) -> SimGateway:
        gateway = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET, faults=faults, **kwargs)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session for raw requests."""
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve `app` on a free port of 127.0.0.1 (HTTPS with `ssl_context`); yields its /router/rest URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{runner.addresses[0][1]}/router/rest"
    finally:
        await runner.cleanup()
