"""TOP batch calls: the pure encoding, known-answer signatures, and send_batch against the simulated gateway."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.gateway import batch
from bridge.gateway.client import TopClient
from bridge.gateway.protocol import BUSINESS_PARAM, METHOD, format_timestamp
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults, Throttle
from bridge.metrics import Metrics
from bridge.models import MobileReceiverMessageEvent, Outcome, Verdict

from .conftest import APP_KEY, APP_SECRET, SimFactory, gateway_settings, message, serve

D, R, J, S, T = Verdict.DELIVERED, Verdict.RETRYABLE, Verdict.REJECTED, Verdict.SYSTEMIC, Verdict.THROTTLED

# --- known-answer vectors (written out by hand and recomputed here with hashlib/hmac, not the signer) --------

KAT_MESSAGES = [
    MobileReceiverMessageEvent(
        msg_key="6f1c2a9e-3b7d-4c2a-9e1f-0a1b2c3d4e5f",
        event_time_millis=1451620800000,
        event_type="mobile_receiver",
        mobile_receiver="13800000000",
        json_data='{"course":"CS 101"}',
    ),
    MobileReceiverMessageEvent(
        msg_key="0d9e8f7a-6b5c-4d3e-8f2a-1b2c3d4e5f60",
        event_time_millis=1451620800001,
        event_type="mobile_receiver",
        mobile_receiver="13900000000",
        json_data='{"note":"课程+1 & 50%"}',
    ),
]
KAT_BODY = (
    "#PUBLIC#method=alibaba.campus.mc.message.sendmessagetomobile"
    "\r\n-S-\r\n"
    "mobile_receiver_message_event=%7B%22msg_key%22:%226f1c2a9e-3b7d-4c2a-9e1f-0a1b2c3d4e5f%22,"
    "%22event_time_millis%22:1451620800000,%22json_data%22:%22%7B%5C%22course%5C%22:%5C%22CS+101%5C%22%7D%22,"
    "%22event_type%22:%22mobile_receiver%22,%22mobile_receiver%22:%2213800000000%22%7D"
    "\r\n-S-\r\n"
    "mobile_receiver_message_event=%7B%22msg_key%22:%220d9e8f7a-6b5c-4d3e-8f2a-1b2c3d4e5f60%22,"
    "%22event_time_millis%22:1451620800001,%22json_data%22:%22%7B%5C%22note%5C%22:"
    "%5C%22%E8%AF%BE%E7%A8%8B%2B1+%26+50%25%5C%22%7D%22,%22event_type%22:%22mobile_receiver%22,"
    "%22mobile_receiver%22:%2213900000000%22%7D"
)
KAT_SIGNS = {
    "md5": "3B35FEAE12D6AB1169AA845CD7E63E13",
    "hmac": "5CB5E2F98AA00BDA978F7859F7178F6A",
    "hmac-sha256": "37EC2C52A8C54B99CE3522580DE1E0D82270AF9E8BBD8AC18451C4CF46F3A836",
}


def independent_sign(method: str) -> str:
    """The batch signature by the recipe in top-gateway.md, straight from hashlib/hmac."""
    secret = "helloworld"
    system = f"app_key12345678formatjsonsessiontestsign_method{method}timestamp2016-01-01 12:00:00v2.0"
    data = (system + KAT_BODY).encode("utf-8")
    if method == "md5":
        return hashlib.md5(secret.encode() + data + secret.encode(), usedforsecurity=False).hexdigest().upper()
    digest = hashlib.md5 if method == "hmac" else hashlib.sha256
    return hmac.new(secret.encode(), data, digest).hexdigest().upper()


@pytest.mark.parametrize("method", list(KAT_SIGNS))
def test_batch_known_answer_vectors(method: str) -> None:
    assert independent_sign(method) == KAT_SIGNS[method]
    settings = gateway_settings(
        "http://127.0.0.1:9/router/rest",
        app_key="12345678",
        app_secret="helloworld",
        sign_method=method,
        session="test",
        partner_id=None,
    )
    client = TopClient(settings, clock=lambda: 1451620800.0)
    url, body = client.encode_batch(KAT_MESSAGES)
    assert body.decode("ascii") == KAT_BODY
    parts = urlsplit(url)
    assert parts.path == "/router/batch"
    query = dict(parse_qsl(parts.query))
    assert query == {
        "app_key": "12345678",
        "v": "2.0",
        "format": "json",
        "sign_method": method,
        "session": "test",
        "timestamp": "2016-01-01 12:00:00",
        "sign": KAT_SIGNS[method],
    }


def test_kat_body_decodes_to_the_messages() -> None:
    public, calls = batch.parse_body(KAT_BODY)
    assert public == {"method": METHOD}
    assert [json.loads(c[BUSINESS_PARAM]) for c in calls] == [m.to_api_dict() for m in KAT_MESSAGES]


# --- the pure protocol -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("https://eco.taobao.com/router/rest", "https://eco.taobao.com/router/batch"),
        ("http://127.0.0.1:8080/router/rest", "http://127.0.0.1:8080/router/batch"),
        ("http://gw/top/router/rest?x=1", "http://gw/top/router/batch?x=1"),
    ],
)
def test_batch_url(rest: str, expected: str) -> None:
    assert batch.batch_url(rest) == expected


def test_batch_url_needs_router_rest() -> None:
    with pytest.raises(ValueError, match="must end with /router/rest"):
        batch.batch_url("http://gw/api")


@pytest.mark.parametrize(
    ("entries", "public", "separator", "expected"),
    [
        (["a=1", "b=2"], "#PUBLIC#method=m", batch.SEPARATOR, "#PUBLIC#method=m\r\n-S-\r\na=1\r\n-S-\r\nb=2"),
        (["a=1", batch.EMPTY_ENTRY], None, batch.SEPARATOR, "a=1\r\n-S-\r\nN"),
        (["a=1", "b=2"], None, "|||", "a=1|||b=2"),
    ],
    ids=["public", "empty-entry", "custom-separator"],
)
def test_encode_and_parse_body(entries: list[str], public: str | None, separator: str, expected: str) -> None:
    body = batch.encode_body(entries, public=public, separator=separator)
    assert body == expected
    parsed_public, calls = batch.parse_body(body, separator)
    assert parsed_public == ({"method": "m"} if public else {})
    assert calls == [{} if e == "N" else dict(parse_qsl(e)) for e in entries]


def test_encode_entry() -> None:
    assert batch.encode_entry({}) == "N"
    assert batch.encode_entry({"k": "a b&c"}) == "k=a+b%26c"


def test_split_and_join_responses() -> None:
    bodies = [b'{"a":1}', b'{"error_response":{"code":15}}', b"{}"]
    joined = batch.join_responses(bodies)
    assert joined == b'{"a":1}\r\n-S-\r\n{"error_response":{"code":15}}\r\n-S-\r\n{}'
    assert batch.split_responses(joined) == bodies
    assert batch.split_responses(b'{"error_response":{"code":25}}') == [b'{"error_response":{"code":25}}']


def test_throttle_admits_a_batch_whole_or_bans() -> None:
    throttle = Throttle(qps=5, ban_seconds=2)
    assert throttle.admit(10.0, 3) is None
    assert throttle.admit(10.1, 3) == 2  # 6 > 5: the whole batch is refused and the ban starts
    assert throttle.admit(11.5, 1) == 1
    assert (throttle.bans, throttle.calls_during_ban) == (1, 1)
    assert throttle.admit(12.2, 5) is None  # after the ban the window starts empty


# --- send_batch against the simulator ------------------------------------------------------------------


async def send_batch(url: str, msgs: list[MobileReceiverMessageEvent], **settings: Any) -> list[Outcome]:
    async with TopClient(gateway_settings(url, **settings)) as client:
        return await client.send_batch(msgs)


@pytest.mark.parametrize("simplify", [False, True], ids=["wrapped", "simplify"])
@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_round_trip_every_sign_method(sim: SimGateway, sign_method: str, simplify: bool) -> None:
    msgs = [message(mobile_receiver=f"1380000000{i}") for i in range(5)]
    outcomes = await send_batch(sim.url, msgs, sign_method=sign_method, simplify=simplify, session="sess")
    assert [o.verdict for o in outcomes] == [D] * 5, [o.describe() for o in outcomes]
    assert len({o.request_id for o in outcomes}) == 5
    assert [sim.state.messages[m.msg_key].message for m in msgs] == [m.to_api_dict() for m in msgs]
    stats = sim.state.stats_dict()
    assert (stats["total_requests"], stats["batches"], stats["batch_messages"], stats["accepted"]) == (1, 1, 5, 5)


async def test_a_batch_of_one_goes_to_router_rest(sim: SimGateway) -> None:
    outcomes = await send_batch(sim.url, [message()])
    assert [o.verdict for o in outcomes] == [D]
    assert (sim.state.stats.total_requests, sim.state.stats.batches) == (1, 0)
    assert await send_batch(sim.url, []) == []


async def test_mixed_results_keep_order_and_independence(make_sim: SimFactory) -> None:
    """Delivered, rejected (recipient refused, bad msg_key) and retryable (isp) calls in one batch: each
    outcome belongs to its own message, in order."""
    sim = await make_sim(Faults(reject_mobile_prefixes=("170",), isp_error_rate=0.4, seed=11))
    msgs = []
    for i in range(20):
        if i in (1, 6, 11):
            msgs.append(message(mobile_receiver="17000000000"))
        elif i == 7:
            msgs.append(message(msg_key="bad"))
        else:
            msgs.append(message(mobile_receiver=f"1390000{i:04d}"))
    outcomes = await send_batch(sim.url, msgs)
    assert len(outcomes) == 20
    verdicts = {o.verdict for o in outcomes}
    assert {D, J, R} <= verdicts, [o.describe() for o in outcomes]
    for m, o in zip(msgs, outcomes, strict=True):
        accepted = m.msg_key in sim.state.messages
        assert (o.verdict is D) == accepted, (m, o.describe())
        if m.msg_key == "bad":
            assert (o.verdict, o.code, o.sub_code) == (J, 15, "isv.invalid-parameter")
        elif o.verdict is J:
            assert (m.mobile_receiver or "").startswith("170") and o.code == 50
        elif o.verdict is R:
            assert o.sub_code == "isp.top-remote-service-unavailable"
    assert sim.state.stats.batches == 1


async def test_whole_batch_refusal_applies_to_every_message(sim: SimGateway) -> None:
    msgs = [message() for _ in range(4)]
    outcomes = await send_batch(sim.url, msgs, app_secret="wrong-secret")
    assert [(o.verdict, o.code, o.msg) for o in outcomes] == [(S, 25, "Invalid signature")] * 4
    assert outcomes[0].detail == "the whole batch of 4 refused"
    assert sim.state.stats.refusals == {"25": 1} and not sim.state.messages


async def test_a_ban_refuses_the_whole_batch(make_sim: SimFactory) -> None:
    clock = [1000.0]
    sim = await make_sim(Faults(qps=5, ban_seconds=3), monotonic=lambda: clock[0])
    async with TopClient(gateway_settings(sim.url)) as client:
        first = await client.send_batch([message() for _ in range(3)])
        banned = await client.send_batch([message() for _ in range(3)])  # 6 > 5 in the window
        clock[0] += 1
        during = await client.send_batch([message() for _ in range(2)])
        clock[0] += 2.5
        after = await client.send_batch([message() for _ in range(5)])
    assert [o.verdict for o in first] == [D] * 3
    assert [(o.verdict, o.code, o.ban_seconds) for o in banned] == [(T, 7, 3.0)] * 3
    assert [(o.verdict, o.ban_seconds) for o in during] == [(T, 2.0)] * 2
    assert [o.verdict for o in after] == [D] * 5
    stats = sim.state.stats_dict()
    assert (stats["bans"], stats["calls_during_ban"], stats["accepted"], stats["refusals"]) == (1, 2, 8, {"7": 2})


@pytest.mark.parametrize(
    ("faults", "detail"),
    [
        (Faults(drop_rate=1), "disconnected"),
        (Faults(http_503_rate=1), "http_status: 503"),
        (Faults(bad_body_rate=1), "bad_body: not JSON"),
    ],
    ids=["dropped", "http-503", "bad-body"],
)
async def test_request_faults_apply_to_every_message(make_sim: SimFactory, faults: Faults, detail: str) -> None:
    sim = await make_sim(faults)
    outcomes = await send_batch(sim.url, [message() for _ in range(3)])
    assert [o.verdict for o in outcomes] == [R] * 3
    assert all(o.detail is not None and o.detail.startswith(detail) for o in outcomes)


async def test_transport_timeout_applies_to_every_message(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(hang_rate=1, hang_seconds=60))
    outcomes = await send_batch(sim.url, [message() for _ in range(3)], timeout_seconds=0.2)
    assert [(o.verdict, o.detail) for o in outcomes] == [(R, "timeout: no response within 0.2s")] * 3


async def test_a_413_batch_is_halved_until_the_oversized_message_is_alone(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(max_body_bytes=1500))
    small = [message() for _ in range(5)]
    big = message(json_data=orjson.dumps({"text": "x" * 1500}).decode())
    msgs = [*small[:2], big, *small[2:]]
    outcomes = await send_batch(sim.url, msgs)
    assert [o.verdict for o in outcomes] == [D, D, J, D, D, D], [o.describe() for o in outcomes]
    rejected = outcomes[2]
    assert rejected.http_status == 413
    assert rejected.detail is not None and rejected.detail.startswith("http_status: 413 (request body ")
    assert int(rejected.detail.split("request body ")[1].split(" ")[0]) > 1500
    assert set(sim.state.messages) == {m.msg_key for m in small}
    assert sim.state.stats.http_errors["413"] >= 2


async def test_too_few_responses_are_a_bad_body_for_all() -> None:
    async def two_parts(request: web.Request) -> web.Response:
        part = orjson.dumps({"result": {"success": True}, "request_id": "x"})
        return web.Response(body=batch.join_responses([part, part]), content_type="text/plain")

    app = web.Application()
    app.router.add_post("/router/batch", two_parts)
    async with serve(app) as url:
        outcomes = await send_batch(url, [message()] * 3)
    assert [(o.verdict, o.detail) for o in outcomes] == [(R, "bad_body: 2 responses for a batch of 3")] * 3


async def test_requests_and_messages_are_counted_apart(sim: SimGateway) -> None:
    metrics = Metrics(CollectorRegistry())
    async with TopClient(gateway_settings(sim.url), observer=metrics) as client:
        await client.send_batch([message() for _ in range(4)])
        await client.send_batch([message() for _ in range(2)])
        await client.send(message())
    value = metrics.registry.get_sample_value
    assert value("bridge_gateway_http_requests_total", {"endpoint": "batch"}) == 2
    assert value("bridge_gateway_http_requests_total", {"endpoint": "rest"}) == 1


# --- the simulator's batch route, raw ---------------------------------------------------------------------


def signed_batch(body: str, **overrides: str) -> dict[str, str]:
    query = {
        "app_key": APP_KEY,
        "timestamp": format_timestamp(time.time()),
        "v": "2.0",
        "format": "json",
        "sign_method": "hmac-sha256",
    }
    query.update(overrides)
    canonical = "".join(k + v for k, v in sorted(query.items())) + body
    query["sign"] = hmac.new(APP_SECRET.encode(), canonical.encode(), hashlib.sha256).hexdigest().upper()
    return query


async def post_batch(
    http: aiohttp.ClientSession, sim: SimGateway, body: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    url = sim.url.replace("/router/rest", "/router/batch")
    async with http.post(url, params=signed_batch(body), data=body.encode(), headers=headers) as resp:
        assert resp.status == 200
        raw = await resp.read()
    separator = (headers or {}).get(batch.SEPARATOR_HEADER, batch.SEPARATOR)
    return [orjson.loads(p) for p in batch.split_responses(raw, separator)]


async def test_sim_checks_each_call_on_its_own(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    good = batch.encode_entry({BUSINESS_PARAM: orjson.dumps(message().to_api_dict()).decode()})
    other_method = batch.encode_entry({"method": "taobao.other.api", BUSINESS_PARAM: "{}"})
    body = batch.encode_body([good, other_method, batch.EMPTY_ENTRY, good.replace("mobile_receiver%22", "x%22")])
    answers = await post_batch(http, sim, body)
    assert len(answers) == 4
    assert "alibaba_campus_mc_message_sendmessagetomobile_response" in answers[0]
    assert answers[1]["error_response"]["code"] == 22
    assert answers[2]["error_response"]["code"] == 40
    assert answers[3]["error_response"]["code"] == 41  # unknown field "x"


async def test_sim_honours_a_custom_separator(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    entries = [batch.encode_entry({BUSINESS_PARAM: orjson.dumps(message().to_api_dict()).decode()}) for _ in "ab"]
    body = batch.encode_body(entries, separator="@@")
    answers = await post_batch(http, sim, body, headers={batch.SEPARATOR_HEADER: "@@"})
    assert len(answers) == 2 and all("error_response" not in a for a in answers)


async def test_sim_refuses_a_batch_without_calls(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    answers = await post_batch(http, sim, batch.PUBLIC_LINE)
    assert answers[0]["error_response"]["code"] == 40
