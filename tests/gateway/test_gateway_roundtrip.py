"""TopClient against the real simulated gateway on loopback: every sign method, envelope and outcome class."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from bridge.gateway.client import TopClient, form_quote
from bridge.gateway.protocol import BUSINESS_PARAM, METHOD, format_timestamp
from bridge.gateway.sign import canonical_string, sign
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults
from bridge.models import Outcome, Verdict

from .conftest import APP_SECRET, MOBILE, SimFactory, gateway_settings, message


async def send_one(url: str, msg: Any = None, **settings: Any) -> Outcome:
    async with TopClient(gateway_settings(url, **settings)) as client:
        return await client.send(msg or message())


@pytest.mark.parametrize("simplify", [False, True], ids=["wrapped", "simplify"])
@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_delivered_for_every_sign_method_and_envelope(sim: SimGateway, sign_method: str, simplify: bool) -> None:
    msg = message()
    outcome = await send_one(sim.url, msg, sign_method=sign_method, simplify=simplify)
    assert outcome.verdict is Verdict.DELIVERED, outcome.describe()
    assert outcome.request_id and outcome.latency_seconds > 0
    record = sim.state.messages[msg.msg_key]
    assert record.message == msg.to_api_dict()
    assert record.count == 1


async def test_session_and_partner_id_are_signed(sim: SimGateway) -> None:
    outcome = await send_one(sim.url, session="user-session", partner_id="campus-bridge-test")
    assert outcome.verdict is Verdict.DELIVERED


async def test_request_shape_matches_the_official_sdk() -> None:
    """System parameters and sign in the query, the business parameter alone in the body, all signed."""
    seen: list[tuple[dict[str, str], dict[str, str], str]] = []

    async def record(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        seen.append((dict(parse_qsl(request.query_string)), dict(parse_qsl(body)), request.content_type))
        return web.json_response({"result": {"success": True}, "request_id": "x"})

    app = web.Application()
    app.router.add_post("/router/rest", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        msg = message()
        settings = gateway_settings(f"http://127.0.0.1:{port}/router/rest", simplify=True, session="sess")
        async with TopClient(settings, clock=lambda: 1451620800.0) as client:
            assert (await client.send(msg)).verdict is Verdict.DELIVERED
    finally:
        await runner.cleanup()
    query, form, content_type = seen[0]
    assert content_type == "application/x-www-form-urlencoded"
    assert form == {BUSINESS_PARAM: msg.to_json().decode()}
    assert query["method"] == METHOD
    assert query["timestamp"] == "2016-01-01 12:00:00"  # 04:00 UTC is noon in GMT+8
    assert {k: query[k] for k in ("app_key", "v", "format", "sign_method", "simplify", "session")} == {
        "app_key": "test-app",
        "v": "2.0",
        "format": "json",
        "sign_method": "hmac-sha256",
        "simplify": "true",
        "session": "sess",
    }
    assert query["partner_id"] == "campus-bridge"
    assert query["sign"] == sign({**query, **form}, APP_SECRET, "hmac-sha256")


def test_encode_is_deterministic_and_decodable() -> None:
    client = TopClient(gateway_settings("http://127.0.0.1:9/router/rest"), clock=lambda: 1451620800.0)
    msg = message(json_data='{"note":"课程 变更 +1 & 50%"}')
    url, body = client.encode(msg)
    assert (url, body) == client.encode(msg)
    params = {**dict(parse_qsl(urlsplit(url).query)), **dict(parse_qsl(body.decode("ascii")))}
    assert params[BUSINESS_PARAM] == msg.to_json().decode()
    assert params["sign"] == sign(params, APP_SECRET, "hmac-sha256")
    assert canonical_string(params).startswith("app_keytest-app")


@pytest.mark.parametrize("text", ["a b", "+&=%#?/", "课程", "", "\n\t\x00", "😀"], ids=repr)
def test_form_quote_round_trips(text: str) -> None:
    assert dict(parse_qsl(f"v={form_quote(text)}", keep_blank_values=True))["v"] == text
    assert form_quote(text) == URL.build(query={"v": text}).raw_query_string[2:]  # what yarl's public API gives


# --- every outcome class -----------------------------------------------------------------------------


class FakeMonotonic:
    """A clock for the simulator's throttle that only moves when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_throttled_with_ban_seconds_then_recovers(make_sim: SimFactory) -> None:
    clock = FakeMonotonic()
    sim = await make_sim(Faults(qps=2, ban_seconds=3), monotonic=clock)
    async with TopClient(gateway_settings(sim.url)) as client:
        verdicts = [(await client.send(message())).verdict for _ in range(2)]
        throttled = await client.send(message())
        clock.now += 1.5
        during_ban = await client.send(message())
        clock.now += 1.6  # ban over
        after = await client.send(message())
    assert verdicts == [Verdict.DELIVERED, Verdict.DELIVERED]
    assert throttled.verdict is Verdict.THROTTLED
    assert (throttled.code, throttled.msg, throttled.sub_code, throttled.sub_msg, throttled.ban_seconds) == (
        7,
        "App Call Limited",
        "accesscontrol.limited-by-app-access-count",
        "This ban will last for 3 more seconds",
        3.0,
    )
    assert during_ban.verdict is Verdict.THROTTLED and during_ban.ban_seconds == 2.0
    assert after.verdict is Verdict.DELIVERED
    stats = sim.state.stats_dict()
    assert (stats["bans"], stats["calls_during_ban"], stats["refusals"], stats["accepted"]) == (1, 1, {"7": 2}, 3)


@pytest.mark.parametrize(
    ("faults", "attrs"),
    [
        (Faults(isp_error_rate=1), {"code": 15, "sub_code": "isp.top-remote-service-unavailable"}),
        (Faults(http_502_rate=1), {"http_status": 502}),
        (Faults(http_503_rate=1), {"http_status": 503}),
        (Faults(bad_body_rate=1), {"http_status": 200}),
        (Faults(drop_rate=1), {"http_status": None}),
    ],
    ids=["isp", "http-502", "http-503", "non-json-body", "dropped-connection"],
)
async def test_retryable(make_sim: SimFactory, faults: Faults, attrs: dict[str, Any]) -> None:
    sim = await make_sim(faults)
    outcome = await send_one(sim.url)
    assert outcome.verdict is Verdict.RETRYABLE, outcome.describe()
    for name, value in attrs.items():
        assert getattr(outcome, name) == value
    assert not sim.state.messages


async def test_dropped_connection_detail(make_sim: SimFactory) -> None:
    outcome = await send_one((await make_sim(Faults(drop_rate=1))).url)
    assert outcome.detail is not None and outcome.detail.startswith("disconnected")
    assert outcome.code_label == "disconnected"


async def test_non_json_body_detail(make_sim: SimFactory) -> None:
    outcome = await send_one((await make_sim(Faults(bad_body_rate=1))).url)
    assert outcome.detail is not None and outcome.detail.startswith("bad_body: not JSON")


async def test_hang_longer_than_timeout_is_a_retryable_timeout(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(hang_rate=1, hang_seconds=60))
    started = time.perf_counter()
    outcome = await send_one(sim.url, timeout_seconds=0.3)
    assert outcome.verdict is Verdict.RETRYABLE
    assert outcome.detail == "timeout: no response within 0.3s"
    assert 0.25 < outcome.latency_seconds < 5 and time.perf_counter() - started < 10
    assert sim.state.stats.hung == 1


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcome = await send_one(f"http://127.0.0.1:{port}/router/rest")
    assert outcome.verdict is Verdict.RETRYABLE
    assert outcome.detail is not None and outcome.detail.startswith("connect")


async def test_wrong_path_is_systemic(sim: SimGateway) -> None:
    outcome = await send_one(sim.url.replace("/router/rest", "/wrong"))
    assert (outcome.verdict, outcome.http_status) == (Verdict.SYSTEMIC, 404)


@pytest.mark.parametrize(
    ("faults", "msg", "attrs"),
    [
        (Faults(business_failure_rate=1), {}, {"detail": "business_failure: error_code=400"}),
        (
            Faults(reject_mobile_prefixes=("138",)),
            {},
            {"code": 50, "sub_code": "isv.invalid-parameter", "sub_msg": "非法参数", "msg": "Remote service error"},
        ),
        (Faults(), {"msg_key": "not-a-uuid"}, {"code": 15, "sub_code": "isv.invalid-parameter"}),
        (Faults(), {"event_type": "sms"}, {"code": 15, "sub_code": "isv.invalid-parameter"}),
        (Faults(), {"json_data": "{not json"}, {"code": 15}),
        (Faults(), {"mobile_receiver": None}, {"code": 15}),
    ],
    ids=["business-failure", "rejected-prefix", "bad-msg-key", "bad-event-type", "bad-json-data", "no-mobile"],
)
async def test_rejected(make_sim: SimFactory, faults: Faults, msg: dict[str, Any], attrs: dict[str, Any]) -> None:
    sim = await make_sim(faults)
    outcome = await send_one(sim.url, message(**msg))
    assert outcome.verdict is Verdict.REJECTED, outcome.describe()
    for name, value in attrs.items():
        assert getattr(outcome, name) == value
    assert not sim.state.messages


async def test_rejected_prefix_spares_other_recipients(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(reject_mobile_prefixes=("139", "170")))
    assert (await send_one(sim.url, message(mobile_receiver=MOBILE))).verdict is Verdict.DELIVERED
    assert (await send_one(sim.url, message(mobile_receiver="17000000000"))).verdict is Verdict.REJECTED


@pytest.mark.parametrize(
    ("settings", "clock_offset", "code", "msg"),
    [
        ({"app_secret": "wrong-secret"}, 0, 25, "Invalid signature"),
        ({"app_key": "other-app"}, 0, 29, "Invalid app Key"),
        ({}, 3600, 31, "Invalid timestamp"),
        ({}, -700, 31, "Invalid timestamp"),
    ],
    ids=["wrong-secret", "wrong-app-key", "clock-1h-ahead", "clock-700s-behind"],
)
async def test_systemic(sim: SimGateway, settings: dict[str, Any], clock_offset: float, code: int, msg: str) -> None:
    client = TopClient(gateway_settings(sim.url, **settings), clock=lambda: time.time() + clock_offset)
    async with client:
        outcome = await client.send(message())
    assert (outcome.verdict, outcome.code, outcome.msg) == (Verdict.SYSTEMIC, code, msg)
    assert outcome.request_id
    assert sim.state.stats.refusals == {str(code): 1}


async def test_small_clock_skew_is_accepted(sim: SimGateway) -> None:
    async with TopClient(gateway_settings(sim.url), clock=lambda: time.time() - 540) as client:
        assert (await client.send(message())).verdict is Verdict.DELIVERED


# --- client lifecycle and concurrency ----------------------------------------------------------------


async def test_duplicates_are_counted_once(sim: SimGateway) -> None:
    msg = message()
    async with TopClient(gateway_settings(sim.url)) as client:
        outcomes = [await client.send(msg) for _ in range(3)]
    assert all(o.verdict is Verdict.DELIVERED for o in outcomes)
    assert sim.state.messages[msg.msg_key].count == 3
    assert (sim.state.stats.accepted, sim.state.stats.duplicates) == (1, 2)


async def test_concurrent_sends_over_a_small_pool(sim: SimGateway) -> None:
    msgs = [message() for _ in range(200)]
    async with TopClient(gateway_settings(sim.url, max_connections=4)) as client:
        outcomes = await asyncio.gather(*(client.send(m) for m in msgs))
    assert {o.verdict for o in outcomes} == {Verdict.DELIVERED}
    assert set(sim.state.messages) == {m.msg_key for m in msgs}


async def test_lazy_start_idempotent_close_and_send_after_close(sim: SimGateway) -> None:
    client = TopClient(gateway_settings(sim.url))
    assert (await client.send(message())).verdict is Verdict.DELIVERED  # starts on first use
    await client.close()
    await client.close()
    outcome = await client.send(message())
    assert (outcome.verdict, outcome.detail) == (Verdict.RETRYABLE, "closed: client closed")


async def test_injected_session_is_used_and_not_closed(sim: SimGateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with TopClient(gateway_settings(sim.url), session=session) as client:
            assert (await client.send(message())).verdict is Verdict.DELIVERED
        assert not session.closed


async def test_cancellation_propagates(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(hang_rate=1, hang_seconds=60))
    async with TopClient(gateway_settings(sim.url)) as client:
        task = asyncio.create_task(client.send(message()))
        while sim.state.stats.hung == 0:  # wait until the request is really in flight
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_timestamp_format_is_gmt8() -> None:
    assert format_timestamp(1451620800.0) == "2016-01-01 12:00:00"
    assert format_timestamp(1451620800.9) == "2016-01-01 12:00:00"
