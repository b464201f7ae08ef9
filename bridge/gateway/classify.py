"""One pure function that turns what a gateway call produced into an Outcome (the delivery decision).

Inputs are plain values, never aiohttp objects: a transport failure (kind + message), or an HTTP status with
the parsed JSON body (or why it could not be parsed), and the call's latency. Precedence, first match wins:

    transport failure       tls / invalid_url -> systemic; timeout, connect, disconnected, ... -> retryable
    HTTP status != 200      400, 413, 422 -> rejected (this request's content; the body size is in the detail)
                            3xx, 401, 403, 404, 405, 406, 407, 410, 411, 414, 415, 426, 431, 451 -> systemic
                                (any request to this URL gets it: wrong URL, blocked, or a front end that
                                refuses the request line or headers, which are the same for every message)
                            429 -> throttled (everyone waits Retry-After seconds, capped; default ban if absent)
                            408, 5xx, any other -> retryable
    undecodable / odd body  retryable ("bad_body")
    error_response          sub_code accesscontrol.limited-by-* or codes 3-8 -> throttled (ban_seconds parsed)
                            codes 9, 11-13, 21-34, 42, 53 -> systemic (even with an isv.* sub_code)
                            sub_code isp.* -> retryable; sub_code isv.* -> rejected
                            codes 40, 41, 43 -> rejected; code 10, 15/50 without sub_code, unknown -> retryable
    result.success false    (or error_code != "200") -> rejected ("business_failure")
    otherwise               delivered
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.gateway.protocol import (
    REJECT_CODES,
    RESPONSE_KEY,
    RETRY_CODES,
    SYSTEMIC_CODES,
    THROTTLE_CODES,
    THROTTLE_SUB_CODE_PREFIX,
    parse_ban_seconds,
)
from bridge.models import Outcome, Verdict

# Statuses that mean "this URL / route is wrong, we are blocked, or the front end refuses what every request
# shares (request line, headers)": retrying each message cannot help, and no message is at fault.
SYSTEMIC_HTTP_STATUSES = frozenset({401, 403, 404, 405, 406, 407, 410, 411, 414, 415, 426, 431, 451})
# Statuses about this request's own content (malformed, too large): retrying the same bytes cannot help.
REJECTED_HTTP_STATUSES = frozenset({400, 413, 422})
THROTTLE_HTTP_STATUS = 429
MAX_RETRY_AFTER_SECONDS = 300.0


class TransportKind(StrEnum):
    """Why no HTTP response was received."""

    TIMEOUT = "timeout"  # no complete response within timeout_seconds
    CONNECT = "connect"  # could not connect: refused, unreachable, DNS
    DISCONNECTED = "disconnected"  # the connection was closed or reset before a full response
    PROTOCOL = "protocol"  # a malformed HTTP response or payload
    TLS = "tls"  # certificate or TLS handshake failure: configuration
    INVALID_URL = "invalid_url"  # gateway.url cannot be requested: configuration
    CLOSED = "closed"  # the client was closed before the call
    OTHER = "other"


_RESULT_EXTRA = ("error_code", "error_level", "error_ext_info", "content")
_SYSTEMIC_TRANSPORT = frozenset({TransportKind.TLS, TransportKind.INVALID_URL})


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """A call that produced no HTTP response: the kind and a human-readable message."""

    kind: TransportKind
    message: str = ""


def classify(
    *,
    latency_seconds: float,
    http_status: int | None = None,
    body: Any = None,
    body_error: str | None = None,
    failure: TransportFailure | None = None,
    request_bytes: int | None = None,
    retry_after: str | None = None,
) -> Outcome:
    """Classify one gateway call. Pure: same inputs, same Outcome.

    Give either `failure` (no response), or `http_status` with the parsed JSON `body` — or `body_error`
    saying why the body could not be parsed. `request_bytes` (the request body's size) is named in the detail
    of a refused status; `retry_after` is the Retry-After header of a 429.
    """
    if failure is not None:
        verdict = Verdict.SYSTEMIC if failure.kind in _SYSTEMIC_TRANSPORT else Verdict.RETRYABLE
        detail = f"{failure.kind.value}: {failure.message}" if failure.message else failure.kind.value
        return Outcome(verdict, latency_seconds=latency_seconds, detail=detail)
    if http_status != 200:
        return _from_status(http_status, latency_seconds, request_bytes, retry_after)
    if body_error is not None:
        return _bad_body(body_error, latency_seconds)
    if not isinstance(body, dict):
        return _bad_body("not a JSON object", latency_seconds)
    error = body.get("error_response")
    if error is not None:
        if not isinstance(error, dict):
            return _bad_body("error_response is not an object", latency_seconds)
        return _from_error(error, latency_seconds)
    envelope = body.get(RESPONSE_KEY, body)  # simplify=true drops the wrapper
    if not isinstance(envelope, dict) or not isinstance(envelope.get("result"), dict):
        return _bad_body("neither error_response nor result", latency_seconds)
    return _from_result(envelope["result"], _text(envelope.get("request_id")), latency_seconds)


def _from_status(status: int | None, latency: float, request_bytes: int | None, retry_after: str | None) -> Outcome:
    detail = f"http_status: {status}"
    ban_seconds: float | None = None
    if status is not None and (300 <= status < 400 or status in SYSTEMIC_HTTP_STATUSES):
        verdict = Verdict.SYSTEMIC
    elif status in REJECTED_HTTP_STATUSES:
        verdict = Verdict.REJECTED
    elif status == THROTTLE_HTTP_STATUS:
        verdict = Verdict.THROTTLED
        ban_seconds = parse_retry_after(retry_after)
    else:
        verdict = Verdict.RETRYABLE
    if request_bytes is not None and verdict in (Verdict.REJECTED, Verdict.SYSTEMIC) and status and status >= 400:
        detail += f" (request body {request_bytes} bytes)"
    return Outcome(verdict, latency_seconds=latency, http_status=status, ban_seconds=ban_seconds, detail=detail)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds of a `Retry-After: <delta-seconds>` header, capped at MAX_RETRY_AFTER_SECONDS; None otherwise
    (absent, or an HTTP date: the engine's default ban applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER_SECONDS)


def _bad_body(reason: str, latency_seconds: float) -> Outcome:
    return Outcome(Verdict.RETRYABLE, latency_seconds=latency_seconds, http_status=200, detail=f"bad_body: {reason}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _from_error(error: dict[str, Any], latency_seconds: float) -> Outcome:
    code = _code(error.get("code"))
    sub_code = _text(error.get("sub_code"))
    msg = _text(error.get("msg"))
    sub_msg = _text(error.get("sub_msg"))
    sub = sub_code or ""
    ban_seconds: float | None = None
    detail: str | None = None
    if sub.startswith(THROTTLE_SUB_CODE_PREFIX) or code in THROTTLE_CODES:
        verdict = Verdict.THROTTLED
        ban_seconds = parse_ban_seconds(sub_msg)
        if ban_seconds is None:
            ban_seconds = parse_ban_seconds(msg)
    elif code in SYSTEMIC_CODES:
        verdict = Verdict.SYSTEMIC
    elif sub.startswith("isp."):
        verdict = Verdict.RETRYABLE
    elif sub.startswith("isv.") or code in REJECT_CODES:
        verdict = Verdict.REJECTED
    elif code in RETRY_CODES:
        verdict = Verdict.RETRYABLE
    else:
        verdict = Verdict.RETRYABLE
        detail = "unclassified error: retried within the attempt budget"
    return Outcome(
        verdict,
        code=code,
        sub_code=sub_code,
        msg=msg,
        sub_msg=sub_msg,
        request_id=_text(error.get("request_id")),
        latency_seconds=latency_seconds,
        http_status=200,
        ban_seconds=ban_seconds,
        detail=detail,
    )


def _from_result(result: dict[str, Any], request_id: str | None, latency_seconds: float) -> Outcome:
    success = result.get("success")
    error_code = _text(result.get("error_code"))
    ok = (success is True or success == "true") and error_code in (None, "200")
    request_id = request_id or _text(result.get("request_id"))
    if ok:
        return Outcome(Verdict.DELIVERED, request_id=request_id, latency_seconds=latency_seconds, http_status=200)
    extra: dict[str, Any] = {k: result[k] for k in _RESULT_EXTRA if k in result}
    return Outcome(
        Verdict.REJECTED,
        msg=_text(result.get("error_msg")),
        request_id=request_id,
        latency_seconds=latency_seconds,
        http_status=200,
        detail=f"business_failure: error_code={error_code}",
        extra=extra,
    )
