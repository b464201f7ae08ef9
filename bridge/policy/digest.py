"""A digest's summary: the folded messages in, one message out. Pure.

The summary is the latest folded message with the fields of the rule's `digest.message` laid over it: the
recipient, event type, source, tenant … stay those of the messages, the title (or whatever the digest sets)
says how many. Its templates see `count` (how many messages were folded) and `items`, one per folded message
in arrival order: `{"event": the event, "kafka": {topic, partition, offset, timestamp_ms}, "message": the
rendered message (json_data as an object when it is JSON)}`. Its msg_key is derived from the rule, the
window and the first folded message, so a digest sent again after a crash keeps its msg_key (the gateway
de-duplicates it), while late items of the same window make a summary of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import orjson

from bridge.models import MobileReceiverMessageEvent
from bridge.rules.codegen import SLOTS
from bridge.rules.coerce import RenderError
from bridge.rules.keys import SEP, uuid5_text
from bridge.rules.policies import Digest

_FIELDS = tuple(f.name for f in dataclasses.fields(MobileReceiverMessageEvent))
_KEY, _EVENT_TYPE, _MOBILE = SLOTS["msg_key"], SLOTS["event_type"], SLOTS["mobile_receiver"]


def message_view(message: MobileReceiverMessageEvent) -> dict[str, Any]:
    """A folded message as digest templates see it: the API fields, json_data decoded when it is JSON."""
    view = message.to_api_dict()
    raw = view.get("json_data")
    if isinstance(raw, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            view["json_data"] = orjson.loads(raw)
    return view


def summary_key(rule: str, window: str, first_msg_key: str) -> str:
    """The msg_key of a digest's summary."""
    return uuid5_text(f"digest{SEP}{rule}{SEP}{window}{SEP}{first_msg_key}")


def summarize(
    rule: str, digest: Digest, window: str, items: list[tuple[MobileReceiverMessageEvent, dict[str, Any] | None]]
) -> MobileReceiverMessageEvent:
    """One summary of the folded `(message, context)` items (at least two); RenderError when it cannot be made."""
    contexts = []
    for message, context in items:
        ctx = dict(context or {})
        ctx.setdefault("event", None)
        ctx.setdefault("kafka", None)
        ctx["message"] = message_view(message)
        contexts.append(ctx)
    values = digest.message.render({"items": contexts, "count": len(items)})
    values.pop()  # the MISSING slot: a digest field left out is simply the folded message's
    base = items[-1][0]
    merged = [v if v is not None else getattr(base, name) for v, name in zip(values, _FIELDS, strict=True)]
    merged[_KEY] = summary_key(rule, window, items[0][0].msg_key)
    if merged[_EVENT_TYPE] == "mobile_receiver" and not merged[_MOBILE]:
        raise RenderError("is required when event_type is mobile_receiver", field="mobile_receiver")
    return MobileReceiverMessageEvent(*merged)
