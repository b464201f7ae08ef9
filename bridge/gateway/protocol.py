"""Protocol facts of `alibaba.campus.mc.message.sendmessagetomobile` (and `taobao.time.get`) on TOP. Pure.

Names, system parameters, error codes with the gateway's own wording, the two response envelopes and the
`yyyy-MM-dd HH:mm:ss` GMT+8 timestamp. Both the client and the simulator take their literals from here, and
the tests compare them with the API page.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

METHOD: Final = "alibaba.campus.mc.message.sendmessagetomobile"
RESPONSE_KEY: Final = "alibaba_campus_mc_message_sendmessagetomobile_response"
BUSINESS_PARAM: Final = "mobile_receiver_message_event"
API_VERSION: Final = "2.0"
FORMAT: Final = "json"
SIGN_METHODS: Final = ("md5", "hmac", "hmac-sha256")
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded;charset=utf-8"

GMT8: Final = timezone(timedelta(hours=8), "GMT+8")
TIMESTAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
MAX_CLOCK_SKEW_SECONDS: Final = 600.0
_GMT8_OFFSET: Final = 8 * 3600
_TIMESTAMP_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})")

# The gateway's own wording of its top-level codes (as seen in real error_response bodies).
MESSAGES: Final[dict[int, str]] = {
    7: "App Call Limited",
    10: "Service currently unavailable",
    15: "Remote service error",
    21: "Missing method",
    22: "Invalid method",
    23: "Invalid format",
    24: "Missing signature",
    25: "Invalid signature",
    28: "Missing app key",
    29: "Invalid app Key",
    30: "Missing timestamp",
    31: "Invalid timestamp",
    32: "Missing version",
    33: "Invalid version",
    40: "Missing required arguments",
    41: "Invalid arguments",
    50: "Remote service error",
}

# How the bridge treats each top-level code (see top-gateway.md, "Error classes").
THROTTLE_CODES: Final = frozenset({3, 4, 5, 6, 7, 8})  # call limits; only 7 states a ban time
SYSTEMIC_CODES: Final = frozenset({9, 11, 12, 13, *range(21, 35), 42, 53})  # configuration: operator acts
REJECT_CODES: Final = frozenset({40, 41, 43})  # this message is wrong
RETRY_CODES: Final = frozenset({10})  # service currently unavailable
THROTTLE_SUB_CODE_PREFIX: Final = "accesscontrol.limited-by-"
APP_LIMIT_SUB_CODE: Final = "accesscontrol.limited-by-app-access-count"
BAN_RE: Final = re.compile(r"last (?:for )?(\d+) more second")

SUCCESS_EXT_INFO: Final = '{"errormsg":"ok"}'

# `taobao.time.get`: the gateway's clock; validates app key, secret, sign method and timestamp, sends nothing.
TIME_METHOD: Final = "taobao.time.get"
TIME_RESPONSE_KEY: Final = "time_get_response"  # the wrapper drops the leading `taobao.`
CLOCK_WARN_SECONDS: Final = 60.0


def format_timestamp(epoch_seconds: float) -> str:
    """`yyyy-MM-dd HH:mm:ss` in GMT+8, whatever the host's time zone."""
    return datetime.fromtimestamp(int(epoch_seconds), tz=GMT8).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> float:
    """Epoch seconds of a GMT+8 `yyyy-MM-dd HH:mm:ss`; ValueError if the text is not exactly that."""
    m = _TIMESTAMP_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"expected yyyy-MM-dd HH:mm:ss, got {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # range check: raises ValueError
    return float(calendar.timegm((year, month, day, hour, minute, second)) - _GMT8_OFFSET)


def parse_ban_seconds(text: str | None) -> float | None:
    """N from "This ban will last for N more seconds", or None when the text states no time."""
    if not text:
        return None
    m = BAN_RE.search(text)
    return float(m.group(1)) if m else None


def ban_message(seconds: int) -> str:
    """The gateway's sub_msg for code 7."""
    return f"This ban will last for {seconds} more seconds"


def error_body(
    code: int,
    msg: str | None = None,
    *,
    sub_code: str | None = None,
    sub_msg: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """`{"error_response": {code, msg, sub_code?, sub_msg?, request_id?}}`, keys in the gateway's order."""
    err: dict[str, Any] = {"code": code, "msg": msg if msg is not None else MESSAGES.get(code, "")}
    if sub_code is not None:
        err["sub_code"] = sub_code
    if sub_msg is not None:
        err["sub_msg"] = sub_msg
    if request_id is not None:
        err["request_id"] = request_id
    return {"error_response": err}


def result_object(
    request_id: str,
    *,
    success: bool = True,
    error_code: str = "200",
    error_msg: str = "success",
    error_level: str = "0",
    error_ext_info: str = SUCCESS_EXT_INFO,
) -> dict[str, Any]:
    """The API's `result` (PojoResult) in the page's field order; defaults are the page's success example."""
    return {
        "content": success,
        "request_id": request_id,
        "error_code": error_code,
        "error_msg": error_msg,
        "success": success,
        "error_level": error_level,
        "error_ext_info": error_ext_info,
    }


def response_body(result: dict[str, Any], request_id: str, *, simplify: bool) -> dict[str, Any]:
    """A normal envelope: wrapped in `<method>_response`, or bare with `simplify=true`."""
    inner = {"result": result, "request_id": request_id}
    return inner if simplify else {RESPONSE_KEY: inner}


def time_body(epoch_seconds: float, request_id: str, *, simplify: bool) -> dict[str, Any]:
    """The success envelope of `taobao.time.get` (`time` is GMT+8 text), wrapped or bare with `simplify`."""
    inner = {"time": format_timestamp(epoch_seconds), "request_id": request_id}
    return inner if simplify else {TIME_RESPONSE_KEY: inner}
