"""The values that flow through the bridge: where a record came from, the API message, mapping and send results.

Pure data, no I/O. Every later stage (rules, gateway, pipeline) speaks in these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

EVENT_TYPES = frozenset({"push_app", "mobile_receiver", "account_receiver"})

# Field order of MobileReceiverMessageEvent as on the API page.
MESSAGE_FIELDS = (
    "msg_key",
    "event_time_millis",
    "json_data",
    "event_type",
    "source",
    "action",
    "resource_id",
    "resource_url",
    "mobile_receiver",
    "company_id",
    "sender",
    "corp_id",
)


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """Where an event came from: the Kafka coordinates of its record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def key_text(self) -> str | None:
        """The record key as text (invalid UTF-8 replaced), or None."""
        return None if self.key is None else self.key.decode("utf-8", "replace")

    def headers_text(self) -> dict[str, str]:
        """Record headers as a text mapping (last one wins on repeats)."""
        return {k: (v or b"").decode("utf-8", "replace") for k, v in self.headers}


@dataclass(frozen=True, slots=True)
class MobileReceiverMessageEvent:
    """The API's one business parameter (`mobile_receiver_message_event`), snake_case as on the wire."""

    msg_key: str
    event_time_millis: int
    event_type: str
    json_data: str | None = None
    source: str | None = None
    action: str | None = None
    resource_id: str | None = None
    resource_url: str | None = None
    mobile_receiver: str | None = None
    company_id: str | None = None
    sender: str | None = None
    corp_id: str | None = None

    def to_api_dict(self) -> dict[str, Any]:
        """The wire object: API field order, nulls omitted."""
        out: dict[str, Any] = {}
        for name in MESSAGE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def to_json(self) -> bytes:
        """Compact JSON, as sent and signed."""
        return orjson.dumps(self.to_api_dict())

    @property
    def recipient(self) -> str:
        """What per-recipient ordering keys on: the phone, else the event type plus resource."""
        if self.mobile_receiver:
            return self.mobile_receiver
        return f"{self.event_type}:{self.corp_id or ''}:{self.company_id or ''}:{self.resource_id or ''}"


@dataclass(frozen=True, slots=True)
class Mapped:
    """A rule produced a message."""

    rule: str
    message: MobileReceiverMessageEvent


@dataclass(frozen=True, slots=True)
class MappingFailure:
    """A rule matched but could not render a valid message; it will be dead-lettered."""

    rule: str
    field: str
    reason: str


class MapResult(NamedTuple):
    """Everything the rules made of one event.

    Immutable like the dataclasses here, but a named tuple: one is built per mapped event, and a tuple is
    built about twice as fast as a frozen dataclass (which sets each field through `object.__setattr__`).
    """

    items: tuple[Mapped | MappingFailure, ...] = ()
    matched: tuple[str, ...] = ()  # ids of rules whose `when` held (and topic matched)
    empty_fanout: tuple[str, ...] = ()  # ids of matched rules whose for_each gave no element
    # (rule, field) of messages made with a field whose `{{ expr }}` resolved to missing: the field was left
    # out (a json_data key: rendered null). Once per event and pair.
    missing: tuple[tuple[str, str], ...] = ()

    @property
    def unmatched(self) -> bool:
        """No rule applied to the event."""
        return not self.matched


class Verdict(StrEnum):
    """The class of a gateway call's outcome; decides what the daemon does next."""

    DELIVERED = "delivered"
    THROTTLED = "throttled"  # everyone waits ban_seconds, then retries; never dead-lettered
    RETRYABLE = "retryable"  # transient: retry with backoff, same msg_key
    REJECTED = "rejected"  # permanent for this message: dead-letter it
    SYSTEMIC = "systemic"  # configuration/credentials/clock: pause everything, alert


@dataclass(frozen=True, slots=True)
class Outcome:
    """The classified result of one gateway call."""

    verdict: Verdict
    code: int | None = None
    sub_code: str | None = None
    msg: str | None = None
    sub_msg: str | None = None
    request_id: str | None = None
    latency_seconds: float = 0.0
    http_status: int | None = None
    ban_seconds: float | None = None
    detail: str | None = None  # e.g. "timeout", "connection reset", "business failure 500"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transport_failure(self) -> bool:
        """No usable gateway answer (connection, DNS, timeout, HTTP 5xx, undecodable body): the circuit counts these."""
        return self.verdict is Verdict.RETRYABLE and self.code is None and self.sub_code is None

    @property
    def code_label(self) -> str:
        """A bounded label for metrics: the top-level code, or the transport kind."""
        if self.code is not None:
            return str(self.code)
        if self.http_status is not None and self.http_status != 200:
            return f"http_{self.http_status}"
        if self.verdict is Verdict.DELIVERED:
            return "0"
        return self.detail.split(":")[0].replace(" ", "_") if self.detail else "none"

    @property
    def sub_code_family(self) -> str:
        """`isv.invalid-parameter` -> `isv`; bounded for metric labels."""
        if not self.sub_code:
            return ""
        return self.sub_code.split(".", 1)[0][:32]

    def describe(self) -> str:
        """One line for logs and dead-letter headers."""
        parts = [self.verdict.value]
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.sub_code:
            parts.append(f"sub_code={self.sub_code}")
        if self.msg:
            parts.append(f"msg={self.msg}")
        if self.sub_msg:
            parts.append(f"sub_msg={self.sub_msg}")
        if self.http_status is not None and self.http_status != 200:
            parts.append(f"http={self.http_status}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)
