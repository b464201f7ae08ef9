"""The classifier table: every signal the gateway (or the network) can give, and the verdict it gets."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.gateway.classify import TransportFailure, TransportKind, classify
from bridge.gateway.protocol import RESPONSE_KEY, error_body, response_body, result_object
from bridge.models import Verdict

D, T, R, J, S = Verdict.DELIVERED, Verdict.THROTTLED, Verdict.RETRYABLE, Verdict.REJECTED, Verdict.SYSTEMIC


def err(code: Any, sub_code: str | None = None, sub_msg: str | None = None, msg: str = "m") -> dict[str, Any]:
    e: dict[str, Any] = {"code": code, "msg": msg, "request_id": "rid"}
    if sub_code is not None:
        e["sub_code"] = sub_code
    if sub_msg is not None:
        e["sub_msg"] = sub_msg
    return {"error_response": e}


def ok(simplify: bool = False, **result: Any) -> dict[str, Any]:
    return response_body({**result_object("r1"), **result}, "rid", simplify=simplify)


# (id, kwargs for classify, verdict, expected Outcome attributes)
CASES: list[tuple[str, dict[str, Any], Verdict, dict[str, Any]]] = [
    ("delivered-wrapped", {"body": ok()}, D, {"request_id": "rid", "http_status": 200, "code": None}),
    ("delivered-simplify", {"body": ok(simplify=True)}, D, {"request_id": "rid"}),
    ("delivered-success-as-text", {"body": ok(success="true")}, D, {}),
    ("delivered-no-error-code", {"body": {"result": {"success": True}, "request_id": "x"}}, D, {}),
    ("delivered-result-request-id", {"body": {RESPONSE_KEY: {"result": result_object("r9")}}}, D, {"request_id": "r9"}),
    (
        "business-failure",
        {"body": ok(success=False, content=False, error_code="400", error_msg="bad receiver", error_level="1")},
        J,
        {"msg": "bad receiver", "detail": "business_failure: error_code=400", "code": None},
    ),
    ("business-error-code-not-200", {"body": ok(error_code="500")}, J, {"detail": "business_failure: error_code=500"}),
    (
        "throttle-app-ban",
        {
            "body": err(
                7,
                "accesscontrol.limited-by-app-access-count",
                "This ban will last for 3 more seconds",
                "App Call Limited",
            )
        },
        T,
        {"ban_seconds": 3.0, "code": 7, "sub_code": "accesscontrol.limited-by-app-access-count"},
    ),
    (
        "throttle-dynamic-no-for",
        {"body": err(7, "accesscontrol.limited-by-dynamic-access-count", "This ban will last 12 more seconds")},
        T,
        {"ban_seconds": 12.0},
    ),
    ("throttle-no-time", {"body": err(7, msg="App Call Limited")}, T, {"ban_seconds": None}),
    ("throttle-ban-in-msg", {"body": err(7, msg="ban will last for 2 more seconds")}, T, {"ban_seconds": 2.0}),
    ("throttle-sub-code-any-code", {"body": err(15, "accesscontrol.limited-by-api-access-count")}, T, {}),
    *[(f"throttle-code-{c}", {"body": err(c)}, T, {"code": c}) for c in (3, 4, 5, 6, 8)],
    (
        "isp-code-15",
        {"body": err(15, "isp.top-remote-connection-timeout")},
        R,
        {"sub_code": "isp.top-remote-connection-timeout"},
    ),
    ("isp-code-50", {"body": err(50, "isp.service-error")}, R, {}),
    ("code-10", {"body": err(10, msg="Service currently unavailable")}, R, {"code": 10}),
    ("code-15-no-sub-code", {"body": err(15)}, R, {}),
    ("unknown-code", {"body": err(99)}, R, {"detail": "unclassified error: retried within the attempt budget"}),
    ("code-missing", {"body": {"error_response": {"msg": "?"}}}, R, {"code": None}),
    ("isv-code-15", {"body": err(15, "isv.invalid-parameter", "非法参数")}, J, {"sub_msg": "非法参数"}),
    ("isv-code-50-page-example", {"body": err(50, "isv.invalid-parameter", "非法参数", "Remote service error")}, J, {}),
    *[(f"reject-code-{c}", {"body": err(c)}, J, {"code": c}) for c in (40, 41, 43)],
    *[(f"systemic-code-{c}", {"body": err(c)}, S, {"code": c}) for c in (9, 11, 12, 13, *range(21, 35), 42, 53)],
    ("systemic-29-beats-isv", {"body": err(29, "isv.appkey-not-exists", msg="Invalid app Key")}, S, {}),
    ("systemic-11-beats-isp", {"body": err(11, "isp.whatever")}, S, {}),
    ("code-as-text", {"body": err("25", msg="Invalid signature")}, S, {"code": 25, "msg": "Invalid signature"}),
    *[
        (f"http-{s}", {"http_status": s}, R, {"http_status": s, "detail": f"http_status: {s}"})
        for s in (500, 502, 503, 504, 408, 409, 421)
    ],
    *[(f"http-{s}", {"http_status": s}, S, {"http_status": s}) for s in (301, 302, 401, 403, 404, 405, 407)],
    # 4xx that retrying the same request cannot fix: this request's content -> rejected, with its size ...
    *[
        (
            f"http-{s}-rejected",
            {"http_status": s, "request_bytes": 2_000_123},
            J,
            {"http_status": s, "detail": f"http_status: {s} (request body 2000123 bytes)"},
        )
        for s in (400, 413, 422)
    ],
    # ... what every request to this URL shares (request line, headers, media type) -> systemic, no DLQ flood
    *[
        (
            f"http-{s}-systemic",
            {"http_status": s, "request_bytes": 512},
            S,
            {"http_status": s, "detail": f"http_status: {s} (request body 512 bytes)"},
        )
        for s in (406, 410, 411, 414, 415, 426, 431, 451)
    ],
    ("http-413-size-unknown", {"http_status": 413}, J, {"detail": "http_status: 413"}),
    ("http-429-retry-after", {"http_status": 429, "retry_after": "7"}, T, {"ban_seconds": 7.0, "http_status": 429}),
    ("http-429-retry-after-capped", {"http_status": 429, "retry_after": " 86400 "}, T, {"ban_seconds": 300.0}),
    ("http-429-no-retry-after", {"http_status": 429}, T, {"ban_seconds": None, "detail": "http_status: 429"}),
    (
        "http-429-retry-after-date",
        {"http_status": 429, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"},
        T,
        {"ban_seconds": None},
    ),
    ("http-503-retry-after-ignored", {"http_status": 503, "retry_after": "5"}, R, {"ban_seconds": None}),
    (
        "not-json",
        {"http_status": 200, "body_error": "not JSON: b'<html>'"},
        R,
        {"detail": "bad_body: not JSON: b'<html>'"},
    ),
    ("json-array", {"body": [1, 2]}, R, {"detail": "bad_body: not a JSON object"}),
    ("no-result", {"body": {"foo": 1}}, R, {"detail": "bad_body: neither error_response nor result"}),
    ("result-not-object", {"body": {RESPONSE_KEY: {"result": "x"}}}, R, {}),
    ("error-response-not-object", {"body": {"error_response": "boom"}}, R, {}),
    *[
        (f"transport-{k.value}", {"failure": TransportFailure(k, "boom")}, R, {"detail": f"{k.value}: boom"})
        for k in TransportKind
        if k not in (TransportKind.TLS, TransportKind.INVALID_URL)
    ],
    ("transport-tls", {"failure": TransportFailure(TransportKind.TLS, "cert")}, S, {"detail": "tls: cert"}),
    ("transport-invalid-url", {"failure": TransportFailure(TransportKind.INVALID_URL)}, S, {"detail": "invalid_url"}),
]


@pytest.mark.parametrize(("kwargs", "verdict", "attrs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_table(kwargs: dict[str, Any], verdict: Verdict, attrs: dict[str, Any]) -> None:
    if "body" in kwargs or "body_error" in kwargs:
        kwargs = {"http_status": 200, **kwargs}
    outcome = classify(latency_seconds=0.25, **kwargs)
    assert outcome.verdict is verdict
    assert outcome.latency_seconds == 0.25
    for name, value in attrs.items():
        assert getattr(outcome, name) == value, name


def test_error_fields_are_carried() -> None:
    body = error_body(15, sub_code="isv.invalid-parameter", sub_msg="非法参数", request_id="abc")
    outcome = classify(latency_seconds=0.1, http_status=200, body=body)
    assert (outcome.code, outcome.msg, outcome.sub_code, outcome.sub_msg, outcome.request_id) == (
        15,
        "Remote service error",
        "isv.invalid-parameter",
        "非法参数",
        "abc",
    )
    assert outcome.sub_code_family == "isv"


def test_business_failure_keeps_result_fields_in_extra() -> None:
    body = ok(success=False, content=False, error_code="400", error_level="1", error_ext_info='{"e":1}')
    outcome = classify(latency_seconds=0.0, http_status=200, body=body)
    assert outcome.extra == {"error_code": "400", "error_level": "1", "error_ext_info": '{"e":1}', "content": False}


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"failure": TransportFailure(TransportKind.TIMEOUT, "no response within 5s")}, "timeout"),
        ({"http_status": 503}, "http_503"),
        ({"http_status": 200, "body": ok(success=False, error_code="400")}, "business_failure"),
        ({"http_status": 200, "body_error": "not JSON"}, "bad_body"),
        ({"http_status": 200, "body": err(7)}, "7"),
        ({"http_status": 200, "body": ok()}, "0"),
    ],
    ids=["timeout", "http", "business", "bad-body", "code", "delivered"],
)
def test_metric_labels_are_bounded(kwargs: dict[str, Any], label: str) -> None:
    assert classify(latency_seconds=0.0, **kwargs).code_label == label


def test_classify_is_pure() -> None:
    body = err(7, "accesscontrol.limited-by-app-access-count", "This ban will last for 1 more seconds")
    assert classify(latency_seconds=1.0, http_status=200, body=body) == classify(
        latency_seconds=1.0, http_status=200, body=body
    )
