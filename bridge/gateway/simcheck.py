"""The simulated gateway's request checks, in the gateway's order, answering with the real codes. Pure.

System parameters first (each with its "missing" and "invalid" code):

    method 21/22 (sendmessagetomobile or taobao.time.get) · app_key 28/29 · v 32/33 · format 23
    · timestamp 30/31 (format, ±10 min skew) · sign 24/25 (md5, hmac, hmac-sha256 over query + body)

then the business parameter `mobile_receiver_message_event`, as the API page describes it:

    absent -> 40 · not a JSON object, unknown field, wrong JSON type -> 41 · required field missing -> 40
    · msg_key not UUID text, event_type not one of the three, json_data not JSON, mobile_receiver missing for
      event_type mobile_receiver -> 15 + isv.invalid-parameter (the remote service's verdict)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from bridge.gateway.protocol import (
    API_VERSION,
    BUSINESS_PARAM,
    FORMAT,
    MAX_CLOCK_SKEW_SECONDS,
    MESSAGES,
    METHOD,
    SIGN_METHODS,
    TIME_METHOD,
    parse_timestamp,
)
from bridge.gateway.sign import Signer, canonical_string
from bridge.models import EVENT_TYPES, MESSAGE_FIELDS

_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REQUIRED: Final = ("msg_key", "event_time_millis", "event_type")
_KNOWN: Final = frozenset(MESSAGE_FIELDS)
INVALID_PARAMETER: Final = "isv.invalid-parameter"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An `error_response` the simulator answers with (request_id is added when it is sent)."""

    code: int
    msg: str
    sub_code: str | None = None
    sub_msg: str | None = None


def _refuse(code: int, sub_code: str | None = None, sub_msg: str | None = None) -> Refusal:
    return Refusal(code, MESSAGES[code], sub_code, sub_msg)


def _invalid(reason: str) -> Refusal:
    return Refusal(15, MESSAGES[15], INVALID_PARAMETER, f"非法参数:{reason}")


class RequestChecker:
    """Checks requests for one app (key + secret); keeps signers and the last parsed timestamp."""

    def __init__(self, app_key: str, app_secret: str) -> None:
        self.app_key = app_key
        self._signers = {m: Signer(app_secret, m) for m in SIGN_METHODS}
        self._ts_text = ""
        self._ts_value = 0.0

    def _timestamp(self, text: str) -> float:
        if text != self._ts_text:
            value = parse_timestamp(text)  # ValueError propagates
            self._ts_text, self._ts_value = text, value
        return self._ts_value

    def check_system(self, params: dict[str, str], now: float) -> Refusal | None:
        """The gateway-level checks; `now` is epoch seconds. None when the call may go on."""
        method = params.get("method")
        if not method:
            return _refuse(21)
        if method not in (METHOD, TIME_METHOD):
            return _refuse(22)
        app_key = params.get("app_key")
        if not app_key:
            return _refuse(28)
        if app_key != self.app_key:
            return _refuse(29, "isv.appkey-not-exists")
        v = params.get("v")
        if not v:
            return _refuse(32)
        if v != API_VERSION:
            return _refuse(33, sub_msg=f"only v={API_VERSION} is supported")
        fmt = params.get("format")
        if fmt != FORMAT:
            return _refuse(23, sub_msg="the simulated gateway answers format=json only")
        ts = params.get("timestamp")
        if not ts:
            return _refuse(30)
        try:
            skew = self._timestamp(ts) - now
        except ValueError:
            return _refuse(31, sub_msg="timestamp must be yyyy-MM-dd HH:mm:ss in GMT+8")
        if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
            return _refuse(31, sub_msg=f"timestamp is {skew:+.0f} s off the gateway clock (GMT+8, ±600 s allowed)")
        given = params.get("sign")
        if not given:
            return _refuse(24)
        signer = self._signers.get(params.get("sign_method") or "md5")
        if signer is None:
            return _refuse(25, sub_msg="sign_method must be md5, hmac or hmac-sha256")
        if signer.sign_canonical(canonical_string(params)) != given.upper():
            return _refuse(25)
        return None


def check_message(raw: str | None) -> tuple[dict[str, Any] | None, Refusal | None]:
    """Validate the business parameter: (the message object, None) or (None, the refusal)."""
    if not raw:
        return None, Refusal(40, f"{MESSAGES[40]}:{BUSINESS_PARAM}")
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        msg = None
    if not isinstance(msg, dict):
        return None, Refusal(41, f"{MESSAGES[41]}:{BUSINESS_PARAM}", sub_msg="not a JSON object")
    unknown = sorted(set(msg) - _KNOWN)
    if unknown:
        return None, Refusal(41, f"{MESSAGES[41]}:{BUSINESS_PARAM}", sub_msg=f"unknown field {unknown[0]}")
    for name in _REQUIRED:
        if msg.get(name) is None:
            return None, Refusal(40, f"{MESSAGES[40]}:{BUSINESS_PARAM}.{name}")
    for name, value in msg.items():
        if value is None:
            continue
        if name == "event_time_millis":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            why = "must be a non-negative integer (epoch milliseconds)"
        else:
            ok, why = isinstance(value, str), "must be a string"
        if not ok:
            return None, Refusal(41, f"{MESSAGES[41]}:{BUSINESS_PARAM}.{name}", sub_msg=why)
    if not _UUID_RE.fullmatch(msg["msg_key"]):
        return None, _invalid("msg_key must be UUID text (UUID.randomUUID().toString())")
    if msg["event_type"] not in EVENT_TYPES:
        return None, _invalid("event_type must be push_app, mobile_receiver or account_receiver")
    json_data = msg.get("json_data")
    if json_data is not None:
        try:
            orjson.loads(json_data)
        except orjson.JSONDecodeError:
            return None, _invalid("json_data must be standard JSON")
    if msg["event_type"] == "mobile_receiver" and not msg.get("mobile_receiver"):
        return None, _invalid("mobile_receiver is required for event_type mobile_receiver")
    return msg, None
