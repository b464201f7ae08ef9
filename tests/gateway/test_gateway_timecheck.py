"""`taobao.time.get`: the simulator answers it like any checked call and records nothing; the check reads the
answer (time, refusal codes, the Date header) into the `gateway credentials` and `clock` lines."""

from __future__ import annotations

import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import orjson
import pytest

from bridge.checks import Status
from bridge.gateway.protocol import format_timestamp
from bridge.gateway.sign import verify
from bridge.gateway.sim import SimGateway
from bridge.gateway.timecheck import assess, probe, read_answer, time_get_params, time_get_url

from .conftest import APP_SECRET, SimFactory, gateway_settings

NOW = 1_764_547_200.0  # 2025-12-01 08:00:00 GMT+8


# ------------------------------------------------------------------------------------------------ simulator
async def test_the_simulator_answers_time_get_with_its_clock_and_records_nothing(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(clock=lambda: NOW)
    params = time_get_params(gateway_settings(sim.url), NOW - 5)
    async with http.post(sim.url, params=params) as resp:
        body = orjson.loads(await resp.read())
        date = resp.headers["Date"]
    rid = body["time_get_response"]["request_id"]
    assert body == {"time_get_response": {"time": "2025-12-01 08:00:00", "request_id": rid}}
    assert parsedate_to_datetime(date).timestamp() == NOW  # the Date header follows the gateway's clock
    assert not sim.state.messages
    assert sim.state.stats.accepted == 0
    async with http.get(sim.url.replace("/router/rest", "/_sim/messages")) as resp:
        assert orjson.loads(await resp.read()) == []


async def test_the_simulator_answers_time_get_bare_with_simplify(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(clock=lambda: NOW)
    params = time_get_params(gateway_settings(sim.url, simplify=True), NOW)
    async with http.post(sim.url, params=params) as resp:
        body = orjson.loads(await resp.read())
    assert body["time"] == "2025-12-01 08:00:00"
    assert set(body) == {"time", "request_id"}


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"app_secret": "wrong-secret"}, 25),
        ({"app_key": "someone-else"}, 29),
        ({"sign_method": "md5", "app_secret": "wrong-secret"}, 25),
    ],
    ids=["wrong-secret", "wrong-app-key", "md5-wrong-secret"],
)
async def test_the_simulator_checks_time_get_like_every_call(
    make_sim: SimFactory, http: aiohttp.ClientSession, overrides: dict[str, Any], code: int
) -> None:
    sim = await make_sim(clock=lambda: NOW)
    params = time_get_params(gateway_settings(sim.url, **overrides), NOW)
    async with http.post(sim.url, params=params) as resp:
        assert orjson.loads(await resp.read())["error_response"]["code"] == code
    assert sim.state.stats.refusals == {str(code): 1}


@pytest.mark.parametrize("delta", [601, -601, 3600], ids=["11min-ahead", "11min-behind", "1h-ahead"])
async def test_the_simulator_refuses_a_time_get_outside_its_timestamp_window(
    make_sim: SimFactory, http: aiohttp.ClientSession, delta: float
) -> None:
    sim = await make_sim(clock=lambda: NOW)
    async with http.post(sim.url, params=time_get_params(gateway_settings(sim.url), NOW + delta)) as resp:
        err = orjson.loads(await resp.read())["error_response"]
        assert parsedate_to_datetime(resp.headers["Date"]).timestamp() == NOW
    assert err["code"] == 31


def test_time_get_is_signed_over_every_parameter_with_the_configured_method() -> None:
    settings = gateway_settings("https://gw.example/router/rest?x=1", sign_method="md5", session="sess-123456")
    url = time_get_url(settings, NOW)
    assert url.startswith("https://gw.example/router/rest?x=1&method=taobao.time.get&")
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["timestamp"] == format_timestamp(NOW)
    assert params["session"] == "sess-123456"
    assert "mobile_receiver_message_event" not in params
    assert verify({k: v for k, v in params.items() if k != "x"}, APP_SECRET)


# ------------------------------------------------------------------------------------------------ reading
def reading(body: object, *, status: int = 200, date: float | None = None, local: float = NOW) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    header = formatdate(date, usegmt=True) if date is not None else None
    return read_answer(local_time=local, http_status=status, body=raw, date_header=header, problem=None)


TIME_OK = {"time_get_response": {"time": "2025-12-01 08:00:00", "request_id": "r1"}}


def error(code: int, msg: str, **more: str) -> dict[str, Any]:
    return {"error_response": {"code": code, "msg": msg, **more, "request_id": "r2"}}


@pytest.mark.parametrize(
    ("answer", "local", "credentials", "clock", "words"),
    [
        (TIME_OK, NOW + 0.5, Status.OK, Status.OK, ["accepted app key test-app", "0.0 s ahead"]),
        (TIME_OK, NOW + 30.5, Status.OK, Status.OK, ["30.0 s ahead"]),
        (TIME_OK, NOW + 95.5, Status.OK, Status.WARN, ["95.0 s ahead", "NTP"]),
        (TIME_OK, NOW - 119.5, Status.OK, Status.WARN, ["120.0 s behind"]),
        (TIME_OK, NOW + 700.5, Status.OK, Status.FAIL, ["700.0 s ahead"]),
        ({"time": "2025-12-01 08:00:00", "request_id": "r"}, NOW + 0.5, Status.OK, Status.OK, ["accepted"]),
        (error(25, "Invalid signature"), NOW, Status.FAIL, Status.SKIP, ["code 25 Invalid signature", "app_secret"]),
        (
            error(29, "Invalid app Key", sub_code="isv.appkey-not-exists"),
            NOW,
            Status.FAIL,
            Status.SKIP,
            ["code 29 Invalid app Key / isv.appkey-not-exists", "gateway.app_key"],
        ),
        (error(27, "Invalid session"), NOW, Status.FAIL, Status.SKIP, ["code 27", "gateway.session"]),
        (error(31, "Invalid timestamp"), NOW, Status.SKIP, Status.FAIL, ["code 31", "more than 600 s off"]),
        (
            error(7, "App Call Limited", sub_msg="This ban will last for 3 more seconds"),
            NOW,
            Status.FAIL,
            Status.SKIP,
            ["throttles", "3 more seconds"],
        ),
        (b"<html>oops</html>", NOW, Status.FAIL, Status.SKIP, ["not JSON"]),
        ({"time_get_response": {"request_id": "r"}}, NOW, Status.FAIL, Status.SKIP, ["no time in the answer"]),
    ],
    ids=[
        "in-sync",
        "30s-ahead",
        "95s-ahead-warns",
        "120s-behind-warns",
        "700s-ahead-fails",
        "simplified-envelope",
        "wrong-secret",
        "wrong-app-key",
        "bad-session",
        "timestamp-refused",
        "throttled",
        "not-json",
        "no-time",
    ],
)
def test_assess_reads_every_answer_into_two_lines(
    answer: object, local: float, credentials: Status, clock: Status, words: list[str]
) -> None:
    creds, clock_check = assess(reading(answer, local=local), gateway_settings("https://gw.example/router/rest"))
    assert (creds.name, clock_check.name) == ("gateway credentials", "clock")
    assert (creds.status, clock_check.status) == (credentials, clock)
    text = creds.line() + "\n" + clock_check.line()
    for word in words:
        assert word in text


def test_a_refused_timestamp_reads_the_skew_from_the_date_header() -> None:
    r = reading(error(31, "Invalid timestamp"), local=NOW + 900, date=NOW)
    _creds, clock = assess(r, gateway_settings("https://gw.example/router/rest"))
    assert clock.status is Status.FAIL
    assert "899.5 s ahead of the gateway's, by its HTTP Date header" in clock.detail


def test_http_errors_are_named_and_transport_errors_scrubbed() -> None:
    settings = gateway_settings("https://gw.example/router/rest")
    creds, _ = assess(reading(b"", status=502), settings)
    assert creds.status is Status.FAIL and "HTTP 502" in creds.detail
    broken = read_answer(
        local_time=NOW, http_status=None, body=b"", date_header=None, problem="bad url=x?session=987654&sign=AB"
    )
    creds, clock = assess(broken, settings)
    assert "987654" not in creds.detail and "session=********" in creds.detail
    assert clock.status is Status.SKIP


# ------------------------------------------------------------------------------------------------ probe
@pytest.mark.parametrize(
    ("offset", "clock"), [(0, Status.OK), (120, Status.WARN), (-900, Status.FAIL)], ids=["in-sync", "2min", "15min"]
)
async def test_probe_against_a_simulator_whose_clock_is_skewed(
    make_sim: SimFactory, offset: float, clock: Status
) -> None:
    sim = await make_sim(clock=lambda: time.time() + offset)
    checks = await probe(gateway_settings(sim.url))
    assert checks[1].status is clock, checks[1].line()
    assert not sim.state.messages


async def test_probe_names_the_code_of_a_wrong_secret(sim: SimGateway) -> None:
    creds, _clock = await probe(gateway_settings(sim.url, app_secret="wrong-secret"))
    assert creds.status is Status.FAIL
    assert creds.detail.startswith("code 25 Invalid signature")
