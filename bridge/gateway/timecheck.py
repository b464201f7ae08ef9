"""`taobao.time.get` on the configured gateway: proves the app key, secret and sign method; measures clock skew.

The call is signed like every call (system parameters and `sign` in the query string, no body), sends
nothing to anyone and answers the gateway's clock (`{"time_get_response": {"time": "yyyy-MM-dd HH:mm:ss"}}`,
GMT+8). A refusal carries the gateway's code: 25 signature, 29 app key, 27 session, 31 timestamp … When the
gateway refuses the timestamp it sends no time, so the skew is then read from its HTTP `Date` header.

    time_get_url(settings, now)   the signed request (pure)
    read_answer(...)              what came back -> TimeReading (pure)
    assess(reading, settings)     TimeReading -> the `gateway credentials` and `clock` checks (pure)
    probe(settings, clock=…)      the one function doing I/O: call, read, assess; never raises
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson

from bridge.checks import Check, Status
from bridge.gateway.client import system_params
from bridge.gateway.protocol import (
    CLOCK_WARN_SECONDS,
    FORM_CONTENT_TYPE,
    MAX_CLOCK_SKEW_SECONDS,
    MESSAGES,
    THROTTLE_CODES,
    TIME_METHOD,
    TIME_RESPONSE_KEY,
    format_timestamp,
    parse_timestamp,
)
from bridge.gateway.sign import Signer
from bridge.redact import redact
from bridge.settings import GatewaySettings

CREDENTIALS: Final = "gateway credentials"
CLOCK: Final = "clock"
_TIMESTAMP_CODES: Final = frozenset({30, 31})
# What to fix for a refusal, by the gateway's top-level code.
_FIX: Final[dict[int, str]] = {
    24: "the request was not signed",
    25: "gateway.app_secret is not this app key's secret, or gateway.sign_method is not the one the app uses",
    26: "this app needs gateway.session",
    27: "gateway.session is invalid or expired: renew it",
    28: "gateway.app_key is empty",
    29: "gateway.app_key is unknown to the gateway",
    11: "the app lacks the permission",
    12: "the session's user lacks the permission",
    21: "gateway.url does not answer like the TOP gateway",
    22: "gateway.url does not answer like the TOP gateway",
    23: "gateway.url does not answer like the TOP gateway",
    32: "gateway.url does not answer like the TOP gateway",
    33: "gateway.url does not answer like the TOP gateway",
}


@dataclass(frozen=True, slots=True)
class TimeReading:
    """What one `taobao.time.get` call gave: the gateway's clock and/or its refusal, or why there was none."""

    local_time: float  # epoch seconds by the local clock, midway through the call
    gateway_time: float | None = None  # epoch seconds by the gateway's clock (its `time`, else its Date header)
    from_date_header: bool = False
    code: int | None = None  # the refusal's top-level code (None: accepted)
    msg: str | None = None
    sub_code: str | None = None
    sub_msg: str | None = None
    request_id: str | None = None
    problem: str | None = None  # no usable answer: transport failure, HTTP status, body (secrets scrubbed)

    @property
    def skew_seconds(self) -> float | None:
        """Local clock minus the gateway's (positive: the local clock is ahead), when known."""
        return None if self.gateway_time is None else self.local_time - self.gateway_time


def time_get_params(settings: GatewaySettings, now: float) -> dict[str, str]:
    """The signed parameters of a `taobao.time.get` call at epoch second `now` (empty values left out)."""
    params = {**system_params(settings), "method": TIME_METHOD, "timestamp": format_timestamp(now)}
    params["sign"] = Signer(settings.secret(), settings.sign_method).sign(params)
    return params


def time_get_url(settings: GatewaySettings, now: float) -> str:
    """The full request URL: gateway.url with the signed parameters as its query string."""
    sep = "&" if "?" in settings.url else "?"
    return settings.url + sep + urlencode(time_get_params(settings, now))


def _gateway_clock(date_header: str | None) -> float | None:
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).timestamp() + 0.5  # whole seconds: assume the middle
    except (TypeError, ValueError, IndexError):
        return None


def read_answer(
    *, local_time: float, http_status: int | None, body: bytes, date_header: str | None, problem: str | None
) -> TimeReading:
    """Interpret one answer (pure). `problem` is a transport failure that left no answer."""
    date_clock = _gateway_clock(date_header)
    by_date: dict[str, Any] = {"gateway_time": date_clock, "from_date_header": date_clock is not None}
    if problem is not None:
        return TimeReading(local_time, problem=redact(problem))
    if http_status != 200:
        return TimeReading(local_time, problem=f"HTTP {http_status} from the gateway", **by_date)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return TimeReading(local_time, problem=f"the answer is not JSON: {redact(repr(body[:60]))}", **by_date)
    error = data.get("error_response") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return TimeReading(
            local_time,
            code=code if isinstance(code, int) else -1,
            msg=_text(error.get("msg")),
            sub_code=_text(error.get("sub_code")),
            sub_msg=_text(error.get("sub_msg")),
            request_id=_text(error.get("request_id")),
            **by_date,
        )
    inner = data.get(TIME_RESPONSE_KEY, data) if isinstance(data, dict) else None
    text = inner.get("time") if isinstance(inner, dict) else None
    try:
        gateway_time = parse_timestamp(text) + 0.5 if isinstance(text, str) else None
    except ValueError:
        gateway_time = None
    if gateway_time is None:
        return TimeReading(local_time, problem=f"no time in the answer: {redact(repr(body[:80]))}", **by_date)
    assert isinstance(inner, dict)
    return TimeReading(local_time, gateway_time=gateway_time, request_id=_text(inner.get("request_id")))


def _text(value: Any) -> str | None:
    return None if value is None else redact(str(value))


def _refusal(reading: TimeReading) -> str:
    parts = [f"code {reading.code} {reading.msg or MESSAGES.get(reading.code or 0, '')}".rstrip()]
    if reading.sub_code:
        parts.append(reading.sub_code)
    if reading.sub_msg:
        parts.append(reading.sub_msg)
    return " / ".join(parts)


def describe_skew(skew: float) -> str:
    """`local clock 95.0 s ahead of the gateway's` (or behind)."""
    way = "ahead of" if skew >= 0 else "behind"
    return f"local clock {abs(skew):.1f} s {way} the gateway's"


def assess(reading: TimeReading, settings: GatewaySettings) -> list[Check]:
    """The `gateway credentials` and `clock` checks for one reading (pure)."""
    where = urlunsplit(urlsplit(settings.url)._replace(query="", fragment=""))
    if reading.problem is not None:
        creds = Check(CREDENTIALS, Status.FAIL, f"no usable answer from {redact(where)}: {reading.problem}")
    elif reading.code is None:
        detail = f"taobao.time.get accepted app key {settings.app_key} signed with {settings.sign_method}"
        if settings.session is not None:
            detail += " (a session is sent, but this call does not prove it may use sendmessagetomobile)"
        creds = Check(CREDENTIALS, Status.OK, detail)
    elif reading.code in _TIMESTAMP_CODES:
        detail = f"not verified: the gateway refused the timestamp first ({_refusal(reading)})"
        creds = Check(CREDENTIALS, Status.SKIP, detail)
    elif reading.code in THROTTLE_CODES:
        detail = f"not verified: the gateway throttles this app ({_refusal(reading)})"
        creds = Check(CREDENTIALS, Status.FAIL, detail)
    else:
        fix = _FIX.get(reading.code, "")
        creds = Check(CREDENTIALS, Status.FAIL, _refusal(reading) + (f": {fix}" if fix else ""))
    return [creds, _clock_check(reading)]


def _clock_check(reading: TimeReading) -> Check:
    limits = f"warn above {CLOCK_WARN_SECONDS:.0f} s; the gateway refuses beyond {MAX_CLOCK_SKEW_SECONDS:.0f} s"
    skew = reading.skew_seconds
    source = ", by its HTTP Date header" if reading.from_date_header else ""
    if reading.code in _TIMESTAMP_CODES:
        detail = f"the gateway refused the request's timestamp ({_refusal(reading)})"
        if skew is not None:
            detail += f": {describe_skew(skew)}{source}"
        else:
            detail += f": the local clock is more than {MAX_CLOCK_SKEW_SECONDS:.0f} s off the gateway's"
        return Check(CLOCK, Status.FAIL, detail + "; fix the host's time sync (NTP)")
    if skew is None:
        return Check(CLOCK, Status.SKIP, "not measured: the gateway sent no time")
    detail = f"{describe_skew(skew)}{source} ({limits})"
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return Check(CLOCK, Status.FAIL, detail)
    if abs(skew) > CLOCK_WARN_SECONDS:
        return Check(CLOCK, Status.WARN, detail + "; fix the host's time sync (NTP)")
    return Check(CLOCK, Status.OK, detail)


async def probe(
    settings: GatewaySettings, *, clock: Callable[[], float] = time.time, timeout_seconds: float | None = None
) -> list[Check]:
    """Call `taobao.time.get` once and assess the answer. Never raises (except CancelledError)."""
    import aiohttp
    from yarl import URL

    timeout = aiohttp.ClientTimeout(total=timeout_seconds or settings.timeout_seconds)
    start = clock()
    status: int | None = None
    body, date_header, problem = b"", None, None
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                URL(time_get_url(settings, start), encoded=True),
                data=b"",
                headers={"Content-Type": FORM_CONTENT_TYPE},
                allow_redirects=False,
            ) as resp,
        ):
            status, date_header, body = resp.status, resp.headers.get("Date"), await resp.read()
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        problem = f"no answer within {timeout.total:g} s"
    except aiohttp.ClientConnectorError as exc:
        problem = f"cannot connect: {exc}"
    except Exception as exc:  # the aiohttp boundary: any failure is a finding, not a crash
        problem = f"{type(exc).__name__}: {exc}"
    local = (start + clock()) / 2
    reading = read_answer(local_time=local, http_status=status, body=body, date_header=date_header, problem=problem)
    return assess(reading, settings)
