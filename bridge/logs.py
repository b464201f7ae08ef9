"""Logging set-up: one JSON object a line (default) or text; phone numbers masked, secrets scrubbed.

Decision logs pass context as `extra={"ctx": {...}}` (topic, partition, offset, rule, msg_key, ...).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from bridge.redact import redact

# A mainland mobile number (11 digits, 1[3-9]…), digits optionally separated by spaces, dashes or dots
# (`138 0013 8000`, `138 - 0013 - 8000`), optionally after a +86 / 0086 / (+86) prefix; not inside a longer number.
_SEP = r"[ \t.\-]{0,3}"
_MOBILE = re.compile(
    r"(?<![0-9])(?P<prefix>(?:(?:\+|00)86|\(\+?86\))[ \t.\-]?)?"
    rf"(?P<head>1{_SEP}[3-9]{_SEP}[0-9])(?P<middle>(?:{_SEP}[0-9]){{4}})(?P<tail>(?:{_SEP}[0-9]){{4}})(?![0-9])"
)
# Any other long run of digits (international numbers): the first 3 and last 4 digits stay.
_DIGITS = re.compile(r"(?<![0-9])(\+?[0-9]{3})[0-9]{2,12}([0-9]{4})(?![0-9])")
_NOT_DIGIT = re.compile(r"[^0-9]")


def mask_phone(value: str | None) -> str | None:
    """`13812345678` -> `138****5678`; anything shorter than 8 digits is fully starred."""
    if value is None:
        return None
    if len(value) < 8:
        return "*" * len(value)
    return f"{value[:3]}****{value[-4:]}"


def _mobile_masked(m: re.Match[str]) -> str:
    head, tail = _NOT_DIGIT.sub("", m["head"]), _NOT_DIGIT.sub("", m["tail"])
    return f"{m['prefix'] or ''}{head}****{tail}"


def mask_text(text: str) -> str:
    """Mask every phone number in free text: mainland mobiles in any common writing, other long digit runs."""
    return _DIGITS.sub(r"\1****\2", _MOBILE.sub(_mobile_masked, text))


def scrub(text: str) -> str:
    """What may leave the process in a log line: secrets redacted, then phone numbers masked."""
    return mask_text(redact(text))


def scrub_value(value: Any) -> Any:
    """`scrub` applied to every text inside a nested value; a nested integer that is a mobile number is masked."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_nested(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_nested(v) for v in value]
    return value


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and _MOBILE.fullmatch(text := str(value)):
        return mask_text(text)
    return scrub_value(value)


# Context values that are identifiers we made, never free text from outside: left as they are.
_UNMASKED_KEYS = frozenset({"msg_key", "topic", "rule", "reason", "group_id", "dlq_topic"})


def _masked_ctx(ctx: dict[str, object]) -> dict[str, object]:
    """Every context value (nested ones too) scrubbed of secrets and phone numbers, except our own ids."""
    return {k: redact(v) if k in _UNMASKED_KEYS and isinstance(v, str) else scrub_value(v) for k, v in ctx.items()}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, and the record's `ctx` mapping."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        ctx = getattr(record, "ctx", None)
        if isinstance(ctx, dict):
            out.update(_masked_ctx(ctx))
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with the context as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        base = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} "
            f"{record.name}: {scrub(record.getMessage())}"
        )
        ctx = getattr(record, "ctx", None)
        if isinstance(ctx, dict) and ctx:
            base += " " + " ".join(f"{k}={v}" for k, v in _masked_ctx(ctx).items())
        if record.exc_info:
            base += "\n" + scrub(self.formatException(record.exc_info))
        return base


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka is chatty at INFO about every rebalance step; keep its warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's logger for a one-shot command that reports failures itself (one line, not a flood)."""
    logger = logging.getLogger(name)
    was_disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was_disabled
