"""Record value bytes -> event object, or the reason it is not one. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class InvalidReason(StrEnum):
    """Why a record cannot be mapped; each is a dead-letter reason and a metric label."""

    EMPTY = "empty_value"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record that will be dead-lettered before mapping."""

    reason: InvalidReason
    detail: str


def decode_value(value: bytes | None, max_bytes: int) -> dict[str, Any] | Invalid:
    """Decode a record value into a JSON object, or say precisely why not."""
    if value is None or len(value) == 0:
        return Invalid(InvalidReason.EMPTY, "record has no value (tombstone or empty)")
    if len(value) > max_bytes:
        return Invalid(InvalidReason.OVERSIZED, f"value is {len(value)} bytes, limit {max_bytes}")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Invalid(InvalidReason.NOT_UTF8, f"invalid UTF-8 at byte {uexc.start}")
        return Invalid(InvalidReason.NOT_JSON, f"not JSON: {exc}")
    if not isinstance(event, dict):
        return Invalid(InvalidReason.NOT_OBJECT, f"JSON {type(event).__name__} where an object is expected")
    return event
