"""The simulated gateway over raw HTTP: literal bodies from the API page, the checks in order, the control API."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.gateway.protocol import BUSINESS_PARAM
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults

from .conftest import MOBILE, SimFactory, message, signed_params

# Literal bodies. Success: the page's JSON example (request_id filled in); error: the page's error example.
SUCCESS_LITERAL = (
    '{"alibaba_campus_mc_message_sendmessagetomobile_response":{"result":{"content":true,"request_id":"RID",'
    '"error_code":"200","error_msg":"success","success":true,"error_level":"0",'
    '"error_ext_info":"{\\"errormsg\\":\\"ok\\"}"},"request_id":"RID"}}'
)
SIMPLIFY_LITERAL = (
    '{"result":{"content":true,"request_id":"RID","error_code":"200","error_msg":"success","success":true,'
    '"error_level":"0","error_ext_info":"{\\"errormsg\\":\\"ok\\"}"},"request_id":"RID"}'
)
PAGE_ERROR_LITERAL = (
    '{"error_response":{"code":50,"msg":"Remote service error","sub_code":"isv.invalid-parameter",'
    '"sub_msg":"非法参数","request_id":"RID"}}'
)
SIGNATURE_LITERAL = '{"error_response":{"code":25,"msg":"Invalid signature","request_id":"RID"}}'
APP_KEY_LITERAL = (
    '{"error_response":{"code":29,"msg":"Invalid app Key","sub_code":"isv.appkey-not-exists","request_id":"RID"}}'
)
BAN_LITERAL = (
    '{"error_response":{"code":7,"msg":"App Call Limited","sub_code":"accesscontrol.limited-by-app-access-count",'
    '"sub_msg":"This ban will last for 2 more seconds","request_id":"RID"}}'
)


async def call(
    http: aiohttp.ClientSession, sim: SimGateway, params: dict[str, str], *, split: bool = True
) -> tuple[int, bytes]:
    """POST like the official SDK (system params in the query) or, with split=False, all in the body."""
    query = {k: v for k, v in params.items() if k != BUSINESS_PARAM} if split else {}
    form = {k: v for k, v in params.items() if k not in query}
    async with http.post(sim.url, params=query, data=form) as resp:
        return resp.status, await resp.read()


def with_rid(literal: str, raw: bytes) -> bytes:
    body = orjson.loads(raw)
    envelope = body.get("error_response") or body.get("alibaba_campus_mc_message_sendmessagetomobile_response") or body
    return literal.replace("RID", envelope["request_id"]).encode()


async def test_success_body_is_the_page_shape_byte_for_byte(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    status, raw = await call(http, sim, signed_params())
    assert status == 200
    assert raw == with_rid(SUCCESS_LITERAL, raw)


async def test_simplify_body(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    _, raw = await call(http, sim, signed_params(simplify="true"))
    assert raw == with_rid(SIMPLIFY_LITERAL, raw)


async def test_rejected_prefix_answers_the_page_error_example(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(Faults(reject_mobile_prefixes=(MOBILE[:3],)))
    _, raw = await call(http, sim, signed_params())
    assert raw == with_rid(PAGE_ERROR_LITERAL, raw)


async def test_signature_and_app_key_literals(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    _, raw = await call(http, sim, signed_params(secret="wrong"))
    assert raw == with_rid(SIGNATURE_LITERAL, raw)
    _, raw = await call(http, sim, signed_params(app_key="nope"))
    assert raw == with_rid(APP_KEY_LITERAL, raw)


async def test_ban_literal(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(Faults(qps=1, ban_seconds=2), monotonic=lambda: 50.0)
    assert orjson.loads((await call(http, sim, signed_params()))[1]).get("error_response") is None
    _, raw = await call(http, sim, signed_params())
    assert raw == with_rid(BAN_LITERAL, raw)


NOW = time.time()

# (id, signed_params kwargs, expected code, msg, sub_code)
SYSTEM_CASES: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("missing-method", {"drop": ("method",)}, 21, "Missing method", None),
    ("wrong-method", {"method": "alibaba.campus.other"}, 22, "Invalid method", None),
    ("missing-app-key", {"drop": ("app_key",)}, 28, "Missing app key", None),
    ("wrong-app-key", {"app_key": "x"}, 29, "Invalid app Key", "isv.appkey-not-exists"),
    ("missing-v", {"drop": ("v",)}, 32, "Missing version", None),
    ("wrong-v", {"v": "1.0"}, 33, "Invalid version", None),
    ("format-xml", {"format": "xml"}, 23, "Invalid format", None),
    ("missing-format", {"drop": ("format",)}, 23, "Invalid format", None),
    ("missing-timestamp", {"drop": ("timestamp",)}, 30, "Missing timestamp", None),
    ("timestamp-iso", {"timestamp": "2016-01-01T12:00:00"}, 31, "Invalid timestamp", None),
    ("timestamp-bad-date", {"timestamp": "2016-02-30 12:00:00"}, 31, "Invalid timestamp", None),
    ("timestamp-epoch", {"timestamp": str(int(NOW * 1000))}, 31, "Invalid timestamp", None),
    ("timestamp-11min-ahead", {"now_delta": 660}, 31, "Invalid timestamp", None),
    ("timestamp-utc-not-gmt8", {"now_delta": -8 * 3600}, 31, "Invalid timestamp", None),
    ("missing-sign", {"sign": ""}, 24, "Missing signature", None),
    ("wrong-secret", {"secret": "wrong"}, 25, "Invalid signature", None),
    ("unknown-sign-method", {"sign_method": "sha1"}, 25, "Invalid signature", None),
    ("tampered-after-signing", {"sign": "0" * 64}, 25, "Invalid signature", None),
]


@pytest.mark.parametrize("case", [c[1:] for c in SYSTEM_CASES], ids=[c[0] for c in SYSTEM_CASES])
async def test_system_parameter_checks(
    sim: SimGateway, http: aiohttp.ClientSession, case: tuple[dict[str, Any], int, str, str | None]
) -> None:
    kwargs, code, msg, sub_code = dict(case[0]), *case[1:]
    forced_sign = kwargs.pop("sign", None)
    if "now_delta" in kwargs:  # relative to the moment of the call, not of the module's import
        kwargs["now"] = time.time() + kwargs.pop("now_delta")
    params = signed_params(**kwargs)
    if forced_sign is not None:
        params["sign"] = forced_sign
    status, raw = await call(http, sim, params)
    err = orjson.loads(raw)["error_response"]
    assert status == 200
    assert (err["code"], err["msg"], err.get("sub_code")) == (code, msg, sub_code)
    assert err["request_id"]
    assert sim.state.stats.refusals == {str(code): 1}
    assert not sim.state.messages


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("split", [True, False], ids=["sdk-query-and-body", "all-in-body"])
async def test_accepts_params_in_query_or_body(
    sim: SimGateway, http: aiohttp.ClientSession, sign_method: str, split: bool
) -> None:
    _, raw = await call(http, sim, signed_params(sign_method=sign_method), split=split)
    assert "error_response" not in orjson.loads(raw)


async def test_get_is_accepted_too(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url, params=signed_params()) as resp:
        assert "error_response" not in await resp.json()


def event(**changes: Any) -> dict[str, Any]:
    base = message().to_api_dict()
    for key, value in changes.items():
        if value is ...:
            base.pop(key)
        else:
            base[key] = value
    return base


M40, M41 = "Missing required arguments:", "Invalid arguments:"
P = BUSINESS_PARAM
# (id, business parameter, code, msg, sub_code)
MESSAGE_CASES: list[tuple[str, Any, int, str, str | None]] = [
    ("param-missing", "", 40, f"{M40}{P}", None),
    ("not-json", "{msg_key:1}", 41, f"{M41}{P}", None),
    ("json-array", "[1,2]", 41, f"{M41}{P}", None),
    ("unknown-field", event(priority="high"), 41, f"{M41}{P}", None),
    ("camel-case-field", event(msgKey="x"), 41, f"{M41}{P}", None),
    ("missing-msg-key", event(msg_key=...), 40, f"{M40}{P}.msg_key", None),
    ("missing-event-time", event(event_time_millis=...), 40, f"{M40}{P}.event_time_millis", None),
    ("missing-event-type", event(event_type=...), 40, f"{M40}{P}.event_type", None),
    ("event-time-as-text", event(event_time_millis="1732665600000"), 41, f"{M41}{P}.event_time_millis", None),
    ("event-time-float", event(event_time_millis=1.5), 41, f"{M41}{P}.event_time_millis", None),
    ("event-time-bool", event(event_time_millis=True), 41, f"{M41}{P}.event_time_millis", None),
    ("event-time-negative", event(event_time_millis=-1), 41, f"{M41}{P}.event_time_millis", None),
    ("mobile-as-number", event(mobile_receiver=13800000000), 41, f"{M41}{P}.mobile_receiver", None),
    ("bad-msg-key", event(msg_key="1"), 15, "Remote service error", "isv.invalid-parameter"),
    ("msg-key-no-dashes", event(msg_key="0" * 32), 15, "Remote service error", "isv.invalid-parameter"),
    ("bad-event-type", event(event_type="sms"), 15, "Remote service error", "isv.invalid-parameter"),
    ("bad-json-data", event(json_data="{'a': 1}"), 15, "Remote service error", "isv.invalid-parameter"),
    ("no-mobile", event(mobile_receiver=...), 15, "Remote service error", "isv.invalid-parameter"),
]


@pytest.mark.parametrize("case", [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES])
async def test_business_parameter_checks(
    sim: SimGateway, http: aiohttp.ClientSession, case: tuple[Any, int, str, str | None]
) -> None:
    business, code, msg, sub_code = case
    params = signed_params(business, drop=(BUSINESS_PARAM,) if business == "" else ())
    _, raw = await call(http, sim, params)
    err = orjson.loads(raw)["error_response"]
    assert (err["code"], err["msg"], err.get("sub_code")) == (code, msg, sub_code)
    if code == 15:
        assert err["sub_msg"].startswith("非法参数:")
    assert not sim.state.messages


@pytest.mark.parametrize(
    "business",
    [
        event(event_type="push_app", mobile_receiver=...),
        event(event_type="account_receiver", corp_id="ding123", mobile_receiver=...),
        event(json_data=...),
        event(json_data="[1,2]", source="s", action="a", resource_id="r", company_id="c", sender="x"),
        event(msg_key="0B5F7A52-3C1D-4E8E-9B6A-2F1C3D4E5F60"),
    ],
    ids=["push-app", "account-receiver", "no-json-data", "all-fields", "upper-case-uuid"],
)
async def test_valid_messages_are_accepted(sim: SimGateway, http: aiohttp.ClientSession, business: Any) -> None:
    _, raw = await call(http, sim, signed_params(business))
    assert "error_response" not in orjson.loads(raw)
    assert sim.state.messages[business["msg_key"]].message == business
