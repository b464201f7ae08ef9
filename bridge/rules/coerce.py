"""Turning rendered values into API field values: text, epoch milliseconds, JSON text, URL and phone checks.

Every function here is pure. A value that cannot be coerced raises `RenderError(reason)`; the rule engine turns
it into a `MappingFailure` for the field being rendered.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from typing import Any

import orjson

# Numbers below this are epoch seconds, at or above it epoch milliseconds (10^11 s is the year 5138).
SECONDS_LIMIT = 100_000_000_000
# 9999-12-31T23:59:59.999Z: the largest instant the API (a Java long of millis) can sensibly carry.
MAX_MILLIS = 253_402_300_799_999

_MAX_REASON = 240
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ONE_MS = timedelta(milliseconds=1)
URL_RE = re.compile(r"https?://[^\s/?#]+[^\s]*")


class RenderError(Exception):
    """A value could not be rendered or coerced; `reason` says why, `field` where (if not the whole field)."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def describe_exception(exc: BaseException) -> str:
    """A failure reason from an exception raised by an expression (type errors, bad comparisons)."""
    text = str(exc) or type(exc).__name__
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 1] + "…"
    return f"expression failed: {text}"


def type_name(value: Any) -> str:
    """The JSON type name of a decoded value (`object`, `array`, `string`, `number`, `boolean`, `null`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def number_text(value: int | float) -> str:
    """A number as text: integers (and integral floats) without a trailing `.0`."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(value)


def check_text(value: str) -> str:
    """`value` if it can be encoded as UTF-8 (no lone surrogates), else RenderError."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RenderError("text is not valid Unicode (lone surrogate)") from None
    return value


def to_json_text(value: Any) -> str:
    """Compact JSON of a decoded value, as text (orjson)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise RenderError(f"cannot be written as JSON: {exc}") from None


def interpolated_text(value: Any) -> str:
    """How a value reads inside text: strings as they are, numbers plainly, `true`/`false`, JSON otherwise.

    null is not silently turned into an empty string: it raises (the caller names the expression).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if value is None:
        raise RenderError("is null")
    return to_json_text(value)


def field_text(value: Any) -> str | None:
    """A String field's value: text as is, numbers and booleans as text, empty text as None; no objects."""
    if type(value) is str:
        if value.isascii():
            return value or None
        return check_text(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, str):
        return check_text(value) if value else None
    raise RenderError(f"expected text, got {type_name(value)}")


def parse_millis(value: Any) -> int:
    """Epoch milliseconds from epoch ms, epoch seconds (< 10^11), digits, or ISO-8601 text with an offset."""
    kind = type(value)
    if kind is str:
        text = value.strip()
        if text.isdigit() and text.isascii() and len(text) < 20:
            return _number_millis(int(text))
        return _iso_millis(text)
    if kind is int:
        if 0 <= value < SECONDS_LIMIT:
            return int(value * 1000)
        return _number_millis(value)
    if isinstance(value, bool) or value is None:
        raise RenderError(f"expected a timestamp, got {type_name(value)}")
    if isinstance(value, int | float):
        return _number_millis(value)
    if isinstance(value, str):
        return parse_millis(str(value))
    raise RenderError(f"expected a timestamp, got {type_name(value)}")


def _number_millis(value: int | float) -> int:
    if isinstance(value, float) and not math.isfinite(value):
        raise RenderError(f"timestamp {value!r} is not finite")
    if value < 0:
        raise RenderError(f"timestamp {number_text(value)} is before 1970")
    millis = value * 1000 if value < SECONDS_LIMIT else value
    if millis > MAX_MILLIS:
        raise RenderError(f"timestamp {number_text(value)} is after the year 9999")
    return round(millis) if isinstance(millis, float) else millis


def _iso_millis(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise RenderError(f"not an ISO-8601 timestamp: {text[:60]!r}") from None
    offset = when.utcoffset()
    if offset is None:
        raise RenderError(f"ISO-8601 timestamp without a UTC offset: {text[:60]!r} (add Z or +08:00)")
    # Plain arithmetic: on CPython 3.11 this is a few times faster than `when.timestamp()`.
    millis = (
        (when.toordinal() - _EPOCH_ORDINAL) * 86_400_000
        + when.hour * 3_600_000
        + when.minute * 60_000
        + when.second * 1000
        + when.microsecond // 1000
        - offset // _ONE_MS
    )
    if millis < 0:
        raise RenderError(f"timestamp {text[:60]!r} is before 1970")
    return millis


def json_data_text(value: Any) -> str | None:
    """`json_data`: an object or array as compact JSON; text must itself be a JSON object or array."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RenderError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict | list):
        raise RenderError(f"must be a JSON object or array, got {type_name(value)}")
    return to_json_text(value)


def is_url_prefix(literal: str) -> bool:
    """Whether a template's leading literal text can start an absolute http(s) URL (checked at load)."""
    for scheme in ("https://", "http://"):
        if literal.startswith(scheme) or scheme.startswith(literal):
            return not any(ch.isspace() for ch in literal)
    return False


def mask_phone(value: str) -> str:
    """`13312345678` -> `133****5678`; shorter values keep only their last two characters."""
    if len(value) >= 8:
        return f"{value[:3]}****{value[-4:]}"
    return "*" * max(len(value) - 2, 0) + value[-2:]
