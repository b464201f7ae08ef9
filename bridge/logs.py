"""Logging set-up: one JSON object a line (default) or text; phone numbers masked, secrets never logged.

Decision logs pass context as `extra={"ctx": {...}}` (topic, partition, offset, rule, msg_key, ...).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_PHONE = re.compile(r"(?<![0-9])(\+?[0-9]{3})[0-9]{2,12}([0-9]{4})(?![0-9])")


def mask_phone(value: str | None) -> str | None:
    """`13812345678` -> `138****5678`; anything shorter than 8 digits is fully starred."""
    if value is None:
        return None
    if len(value) < 8:
        return "*" * len(value)
    return f"{value[:3]}****{value[-4:]}"


def mask_text(text: str) -> str:
    """Mask every phone-number-looking run of digits in free text."""
    return _PHONE.sub(r"\1****\2", text)


# Context values that are identifiers we made, never free text from outside: left as they are.
_UNMASKED_KEYS = frozenset({"msg_key", "topic", "rule", "reason", "group_id", "dlq_topic"})


def _masked_ctx(ctx: dict[str, object]) -> dict[str, object]:
    """Free-text context values (gateway messages, errors) may echo a phone number: mask them."""
    return {k: mask_text(v) if isinstance(v, str) and k not in _UNMASKED_KEYS else v for k, v in ctx.items()}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, and the record's `ctx` mapping."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
        }
        ctx = getattr(record, "ctx", None)
        if isinstance(ctx, dict):
            out.update(_masked_ctx(ctx))
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with the context as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        base = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} "
            f"{record.name}: {mask_text(record.getMessage())}"
        )
        ctx = getattr(record, "ctx", None)
        if isinstance(ctx, dict) and ctx:
            base += " " + " ".join(f"{k}={v}" for k, v in _masked_ctx(ctx).items())
        if record.exc_info:
            base += "\n" + mask_text(self.formatException(record.exc_info))
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
