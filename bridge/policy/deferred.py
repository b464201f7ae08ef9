"""Records of the deferred topic: a message held until it is due, or one item of a digest. Pure codec.

    key      the recipient (one recipient's deferred messages share a partition: a digest's items meet there)
    value    {"v": 1, "kind": "message" | "digest", "rule", "policy", "due_ms", "origin",
              "message": {API fields, as rendered — msg_key included},
              "window": digest window id, "context": {"event", "kafka"}}          (the last two: digests only)
    headers  bridge.deferred.kind, bridge.deferred.due_ms, bridge.rule       (for people reading the topic)

`origin` is "topic/partition/offset/timestamp_ms" of the source record. The message keeps the msg_key the
rule rendered, so the gateway de-duplicates a deferred message sent twice. `decode` never raises: anything
else on the topic is a reason to dead-letter it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from bridge.models import MESSAGE_FIELDS, MobileReceiverMessageEvent

VERSION = 1
Kind = Literal["message", "digest"]
KIND_HEADER = "bridge.deferred.kind"
DUE_HEADER = "bridge.deferred.due_ms"
RULE_HEADER = "bridge.rule"


class DeferralRefused(Exception):
    """The deferred topic refused a record as too large, even in its smallest shape."""


@dataclass(frozen=True, slots=True)
class DeferredRecord:
    """What the deferred topic carries for one message."""

    kind: Kind
    rule: str
    policy: str  # the policy that held it: quiet_hours, limit, digest
    due_ms: int
    message: MobileReceiverMessageEvent
    origin: str
    window: str | None = None  # digest items: the window they were folded into
    context: dict[str, Any] | None = None  # digest items: what the summary's templates see besides the message


def encode(record: DeferredRecord, *, with_context: bool = True) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a deferred record; `with_context=False` leaves a digest item's event out."""
    body: dict[str, Any] = {
        "v": VERSION,
        "kind": record.kind,
        "rule": record.rule,
        "policy": record.policy,
        "due_ms": record.due_ms,
        "origin": record.origin,
        "message": record.message.to_api_dict(),
    }
    if record.kind == "digest":
        body["window"] = record.window
        body["context"] = record.context if with_context else None
    headers = [
        (KIND_HEADER, record.kind.encode()),
        (DUE_HEADER, str(record.due_ms).encode()),
        (RULE_HEADER, record.rule.encode()),
    ]
    return record.message.recipient.encode("utf-8", "surrogatepass"), orjson.dumps(body), headers


def decode(value: bytes | None) -> DeferredRecord | str:
    """The record in `value`, or why it is not one."""
    if not value:
        return "empty value"
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(body, dict):
        return "not a JSON object"
    if body.get("v") != VERSION:
        return f"unknown deferred record version {body.get('v')!r}"
    kind, rule, policy, due, origin = (body.get(k) for k in ("kind", "rule", "policy", "due_ms", "origin"))
    if kind not in ("message", "digest"):
        return f"unknown kind {kind!r}"
    if not (isinstance(rule, str) and isinstance(policy, str) and isinstance(origin, str)):
        return "rule, policy and origin must be text"
    if isinstance(due, bool) or not isinstance(due, int):
        return "due_ms must be an integer"
    message = _message(body.get("message"))
    if isinstance(message, str):
        return message
    window, context = body.get("window"), body.get("context")
    if kind == "digest" and not isinstance(window, str):
        return "a digest item needs its window"
    if context is not None and not isinstance(context, dict):
        return "context must be an object"
    return DeferredRecord(kind, rule, policy, due, message, origin, window, context)


def _message(raw: Any) -> MobileReceiverMessageEvent | str:
    if not isinstance(raw, dict):
        return "message must be an object"
    unknown = set(raw) - set(MESSAGE_FIELDS)
    if unknown:
        return f"message has unknown fields {sorted(unknown)}"
    if not isinstance(raw.get("msg_key"), str) or not isinstance(raw.get("event_type"), str):
        return "message needs msg_key and event_type (text)"
    time_ms = raw.get("event_time_millis")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        return "message needs event_time_millis (an integer)"
    if any(v is not None and not isinstance(v, str) for k, v in raw.items() if k != "event_time_millis"):
        return "message fields must be text"
    return MobileReceiverMessageEvent(**raw)
