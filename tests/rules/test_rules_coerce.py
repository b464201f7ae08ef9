"""Coercion of rendered values: timestamps, text, json_data, URL prefixes, masking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.rules.coerce import (
    RenderError,
    field_text,
    interpolated_text,
    is_url_prefix,
    json_data_text,
    mask_phone,
    parse_millis,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        (1717381200000, 1717381200000),
        (1717381200, 1717381200000),
        (1717381200.25, 1717381200250),
        (99_999_999_999, 99_999_999_999_000),
        (100_000_000_000, 100_000_000_000),
        (0, 0),
        ("1717381200000", 1717381200000),
        (" 1717381200 ", 1717381200000),
        ("2024-06-03T10:15:30+08:00", 1717380930000),
        ("2024-06-03T02:15:30Z", 1717380930000),
        ("2024-06-03T02:15:30.123456+00:00", 1717380930123),
        ("2024-06-03 10:15:30-03:30", 1717422330000),
        ("20240603T101530+0800", 1717380930000),
    ],
    ids=str,
)
def test_parse_millis(value: Any, millis: int) -> None:
    assert parse_millis(value) == millis


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-06-03T10:15:30", "without a UTC offset"),
        ("2024-06-03", "without a UTC offset"),
        ("yesterday", "not an ISO-8601 timestamp"),
        ("", "not an ISO-8601 timestamp"),
        (-1, "before 1970"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        (10**16, "after the year 9999"),
        (float("inf"), "not finite"),
        (float("nan"), "not finite"),
        (None, "got null"),
        (True, "got boolean"),
        ({"a": 1}, "got object"),
        ([1], "got array"),
    ],
    ids=str,
)
def test_parse_millis_errors(value: Any, reason: str) -> None:
    with pytest.raises(RenderError, match=reason):
        parse_millis(value)


@given(st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.timezones()))
def test_iso_millis_agree_with_datetime(when: datetime) -> None:
    assert parse_millis(when.isoformat()) == (when - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("abc", "abc"),
        ("", None),
        (None, None),
        (13800138000, "13800138000"),
        (12.0, "12"),
        (12.5, "12.5"),
        (True, "true"),
        ("李明", "李明"),
    ],
    ids=str,
)
def test_field_text(value: Any, text: str | None) -> None:
    assert field_text(value) == text


@pytest.mark.parametrize("value", [{"a": 1}, [1], "bad \ud800 surrogate"], ids=["object", "array", "surrogate"])
def test_field_text_errors(value: Any) -> None:
    with pytest.raises(RenderError):
        field_text(value)


def test_interpolated_text() -> None:
    assert interpolated_text({"a": [1, 2]}) == '{"a":[1,2]}'
    assert interpolated_text(False) == "false"
    with pytest.raises(RenderError, match="is null"):
        interpolated_text(None)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"b": 1, "a": "李"}, '{"b":1,"a":"李"}'),
        ([1, None], "[1,null]"),
        ('{ "a" : 1 }', '{"a":1}'),
        ("[]", "[]"),
        (None, None),
        ("  ", None),
    ],
    ids=str,
)
def test_json_data_text(value: Any, text: str | None) -> None:
    assert json_data_text(value) == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [("{not json", "not valid JSON"), ('"text"', "got string"), (3, "got number"), ("3", "got number")],
    ids=str,
)
def test_json_data_errors(value: Any, reason: str) -> None:
    with pytest.raises(RenderError, match=reason):
        json_data_text(value)


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        ("https://x/", True),
        ("http://", True),
        ("http", True),
        ("h", True),
        ("ftp://x/", False),
        ("https://a b/", False),
    ],
)
def test_is_url_prefix(literal: str, ok: bool) -> None:
    assert is_url_prefix(literal) is ok


@pytest.mark.parametrize(
    ("phone", "masked"), [("13312345678", "133****5678"), ("+8613700137000", "+86****7000"), ("12345", "***45")]
)
def test_mask(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked
