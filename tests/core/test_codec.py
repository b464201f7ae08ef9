"""decode_value: record bytes -> a JSON object, or the precise reason it is not one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.kafka.codec import Invalid, InvalidReason, decode_value

LIMIT = 1_048_576


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (None, InvalidReason.EMPTY, "no value"),
        (b"", InvalidReason.EMPTY, "no value"),
        (b"x" * (LIMIT + 1), InvalidReason.OVERSIZED, f"{LIMIT + 1} bytes, limit {LIMIT}"),
        (b"\xff" * (LIMIT + 1), InvalidReason.OVERSIZED, "limit"),
        (b'{"a": "\xc3\x28"}', InvalidReason.NOT_UTF8, "at byte 7"),
        (b"\xff{}", InvalidReason.NOT_UTF8, "at byte 0"),
        (b'{"a": "\xed\xa0\x80"}', InvalidReason.NOT_UTF8, "at byte 7"),
        (b"not json", InvalidReason.NOT_JSON, "not JSON"),
        (b'{"a": 1', InvalidReason.NOT_JSON, "not JSON"),
        (b'{"a": NaN}', InvalidReason.NOT_JSON, "not JSON"),
        (b"\xef\xbb\xbf{}", InvalidReason.NOT_JSON, "not JSON"),
        (b"[" * 2_000 + b"]" * 2_000, InvalidReason.NOT_JSON, "not JSON"),
        (b'"\\ud800"', InvalidReason.NOT_JSON, "not JSON"),
        (b"[1, 2]", InvalidReason.NOT_OBJECT, "JSON list"),
        (b"42", InvalidReason.NOT_OBJECT, "JSON int"),
        (b"4.2", InvalidReason.NOT_OBJECT, "JSON float"),
        (b'"text"', InvalidReason.NOT_OBJECT, "JSON str"),
        (b"true", InvalidReason.NOT_OBJECT, "JSON bool"),
        (b"null", InvalidReason.NOT_OBJECT, "where an object is expected"),
    ],
    ids=[
        "none-tombstone",
        "empty",
        "oversized",
        "oversized-checked-before-utf8",
        "bad-utf8-sequence",
        "bad-utf8-first-byte",
        "utf8-encoded-surrogate",
        "garbage",
        "truncated",
        "nan",
        "bom",
        "too-deep",
        "escaped-lone-surrogate",
        "array",
        "int",
        "float",
        "string",
        "bool",
        "null",
    ],
)
def test_invalid_values_say_why(value: bytes | None, reason: InvalidReason, detail: str) -> None:
    result = decode_value(value, LIMIT)
    assert isinstance(result, Invalid)
    assert result.reason is reason
    assert detail in result.detail


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (InvalidReason.EMPTY, "empty_value"),
        (InvalidReason.OVERSIZED, "oversized"),
        (InvalidReason.NOT_UTF8, "not_utf8"),
        (InvalidReason.NOT_JSON, "not_json"),
        (InvalidReason.NOT_OBJECT, "not_object"),
    ],
    ids=str,
)
def test_reasons_are_stable_dead_letter_and_metric_labels(reason: InvalidReason, label: str) -> None:
    assert reason.value == label
    assert str(reason) == label


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"{}", {}),
        (b'  {"a": 1}\n', {"a": 1}),
        (b'{"user": {"phone": "13812345678"}, "tags": [1, 2.5, null, true]}', None),
        ('{"title": "期末考试通知 ✓"}'.encode(), {"title": "期末考试通知 ✓"}),
        (b'{"big": 9223372036854775807, "neg": -9223372036854775808}', None),
    ],
    ids=["empty-object", "whitespace", "nested", "unicode", "int64-limits"],
)
def test_valid_objects_decode(value: bytes, expected: dict[str, Any] | None) -> None:
    result = decode_value(value, LIMIT)
    assert isinstance(result, dict)
    assert result == (expected if expected is not None else orjson.loads(value))


def test_a_value_of_exactly_the_limit_is_accepted() -> None:
    value = b'{"p": "' + b"x" * 100 + b'"}'
    assert isinstance(decode_value(value, len(value)), dict)
    assert isinstance(decode_value(value, len(value) - 1), Invalid)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    result = decode_value(value, 256)
    assert isinstance(result, dict | Invalid)
    if isinstance(result, Invalid):
        assert result.detail


@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    result = decode_value(text.encode("utf-8", "surrogatepass"), LIMIT)
    assert isinstance(result, dict | Invalid)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_any_json_object_round_trips(event: dict[str, Any]) -> None:
    assert decode_value(orjson.dumps(event), LIMIT) == event


@settings(max_examples=40)
@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_any_json_non_object_is_not_an_object(value: Any) -> None:
    result = decode_value(orjson.dumps(value), LIMIT)
    assert isinstance(result, Invalid)
    assert result.reason is InvalidReason.NOT_OBJECT
