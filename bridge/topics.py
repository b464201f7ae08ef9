"""Kafka topic names: which are legal, and which ones a subscription (`topics` or `topic_pattern`) consumes.

A legal name is 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..` (Kafka's own rule). A
`topic_pattern` subscription consumes every topic the pattern matches *at the start of the name*: aiokafka
tests `re.compile(pattern).match(topic)` on each topic in the cluster metadata, not `fullmatch`, so
`orders` consumes `orders.dlq` as well. Everything here mirrors that, so `validate` sees what the consumer will.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_TOPIC_CHARS = 249
_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")


def topic_name_problem(name: str) -> str | None:
    """Why `name` is not a legal Kafka topic name, or None."""
    if not name:
        return "a topic name must not be empty"
    if len(name) > MAX_TOPIC_CHARS:
        return f"topic name of {len(name)} characters is too long (at most {MAX_TOPIC_CHARS})"
    if name in {".", ".."}:
        return f"{name!r} is not a legal topic name"
    if not _LEGAL.fullmatch(name):
        bad = sorted({ch for ch in name if not _LEGAL.fullmatch(ch)})
        shown = " ".join(repr(ch) for ch in bad[:5])
        return f"topic {name!r} has characters Kafka does not allow ({shown}): use only a-z A-Z 0-9 . _ -"
    return None


def pattern_consumes(pattern: str, topic: str) -> bool:
    """Whether a `topic_pattern` subscription consumes `topic` (aiokafka: `re.match`, anchored at the start)."""
    return re.compile(pattern).match(topic) is not None


def consumed_by(topic: str, topics: Sequence[str], pattern: str | None) -> str | None:
    """How the subscription consumes `topic` (`kafka.topics` or `kafka.topic_pattern ...`), or None."""
    if topic in topics:
        return "kafka.topics lists it"
    if pattern is not None and pattern_consumes(pattern, topic):
        return f"kafka.topic_pattern {pattern!r} matches it (aiokafka matches from the start of the name)"
    return None
