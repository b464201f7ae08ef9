"""`bridge send -c FILE --mobile N ...`: send one message through the configured gateway and print the outcome.

It delivers a real push to `--mobile` (required for event_type mobile_receiver: there is no default
recipient); `bridge check` verifies the credentials without sending anything. Exit status: 0 delivered,
1 rejected (this message is wrong), 3 retryable or throttled (try again later), 4 systemic (credentials,
signature, clock, permissions, URL: fix the configuration), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from bridge.cli import add_config_argument
from bridge.logs import scrub, scrub_value
from bridge.models import EVENT_TYPES, MobileReceiverMessageEvent
from bridge.settings import config_path, load_settings

if TYPE_CHECKING:
    from bridge.models import Outcome
    from bridge.settings import GatewaySettings

NAME = "send"
HELP = "send one message through the configured gateway client and print the classified outcome"
# Texts that come from the gateway or from error messages: scrubbed of secrets and phone numbers.
_FREE_TEXT = frozenset({"msg", "sub_msg", "detail", "extra"})
EXIT_CODES = {"delivered": 0, "rejected": 1, "retryable": 3, "throttled": 3, "systemic": 4}

# (flag, MobileReceiverMessageEvent field, help)
_OPTIONAL_FIELDS = (
    ("--json-data", "json_data", "event data: a JSON document (checked before sending)"),
    ("--source", "source", "source of the event"),
    ("--action", "action", "the action that triggered the event"),
    ("--resource-id", "resource_id", "id of the resource the message is about"),
    ("--resource-url", "resource_url", "URL of that resource"),
    ("--company-id", "company_id", "company id"),
    ("--sender", "sender", "who sends it"),
    ("--corp-id", "corp_id", "DingTalk corpId"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.add_argument(
        "--mobile",
        metavar="NUMBER",
        help="the phone number (mobile_receiver); required for event_type mobile_receiver, no default",
    )
    p.add_argument(
        "--event-type", default="mobile_receiver", choices=sorted(EVENT_TYPES), help="default mobile_receiver"
    )
    for flag, _field, text in _OPTIONAL_FIELDS:
        p.add_argument(flag, help=text)
    p.add_argument("--msg-key", help="the idempotency key, UUID text (default: a new random UUID)")
    p.add_argument("--event-time-millis", type=int, help="when the event happened (default: now)")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    p.set_defaults(func=run)


def build_message(args: argparse.Namespace, now: float | None = None) -> MobileReceiverMessageEvent:
    """The message the options describe; ValueError for a bad --json-data."""
    fields: dict[str, Any] = {name: getattr(args, name) for _f, name, _h in _OPTIONAL_FIELDS}
    if fields["json_data"] is not None:
        try:
            orjson.loads(fields["json_data"])
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"--json-data is not valid JSON: {exc}") from exc
    millis = args.event_time_millis
    if millis is None:
        millis = int((time.time() if now is None else now) * 1000)
    return MobileReceiverMessageEvent(
        msg_key=args.msg_key or str(uuid.uuid4()),
        event_time_millis=millis,
        event_type=args.event_type,
        mobile_receiver=args.mobile,
        **fields,
    )


def outcome_dict(outcome: Outcome, message: MobileReceiverMessageEvent) -> dict[str, Any]:
    """The outcome as JSON-ready data (no phone number, no secret: gateway and error texts are scrubbed)."""
    data = {
        "verdict": outcome.verdict.value,
        "code": outcome.code,
        "sub_code": outcome.sub_code,
        "msg": outcome.msg,
        "sub_msg": outcome.sub_msg,
        "request_id": outcome.request_id,
        "http_status": outcome.http_status,
        "ban_seconds": outcome.ban_seconds,
        "detail": outcome.detail,
        "latency_seconds": round(outcome.latency_seconds, 6),
        "msg_key": message.msg_key,
        **({"extra": outcome.extra} if outcome.extra else {}),
    }
    return {k: scrub_value(v) if k in _FREE_TEXT else v for k, v in data.items()}


def format_outcome(outcome: Outcome, message: MobileReceiverMessageEvent) -> str:
    """One human line: the classified outcome, then msg_key, request_id, ban and latency."""
    parts = [outcome.describe(), f"msg_key={message.msg_key}"]
    if outcome.request_id:
        parts.append(f"request_id={outcome.request_id}")
    if outcome.ban_seconds is not None:
        parts.append(f"ban_seconds={outcome.ban_seconds:g}")
    parts.append(f"latency_ms={outcome.latency_seconds * 1000:.1f}")
    return scrub(" ".join(parts))


async def _send(settings: GatewaySettings, message: MobileReceiverMessageEvent) -> Outcome:
    from bridge.gateway.client import TopClient

    async with TopClient(settings) as client:
        return await client.send(message)


def run(args: argparse.Namespace) -> int:
    """Load the config, send one message, print the outcome; the exit status says its class."""
    if args.event_type == "mobile_receiver" and not args.mobile:
        print(
            "error: --mobile is required for event_type mobile_receiver (there is no default recipient;"
            " to check credentials without sending anything, use `bridge check`)",
            file=sys.stderr,
        )
        return 2
    settings = load_settings(config_path(args.config))
    try:
        message = build_message(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from bridge.gateway.loop import run as run_loop

    outcome = run_loop(_send(settings.gateway, message))
    if args.json:
        print(orjson.dumps(outcome_dict(outcome, message)).decode())
    else:
        print(format_outcome(outcome, message))
    return EXIT_CODES[outcome.verdict.value]
