"""Rule policies (quiet hours, per-recipient limits, de-duplication, digests): parsed and checked at load. Pure.

    quiet_hours: {from: "22:30", to: "07:00", timezone: Asia/Shanghai, action: defer}    # action: defer | drop
    limit:       {per_recipient: 5, per_seconds: 600, over: digest, group: social}      # over: drop | defer | digest
    dedupe:      {key: "{{ event.post.id }}", window_seconds: 3600}
    digest:      {window_seconds: 300, max_items: 50, message: {json_data: {title: "{{ count }} …"}}}

`compile_policy` turns a raw rule's policy keys into a `RulePolicy` (or problems naming the key path); what
a policy decides for a message is `bridge.policy.decide`. Cross-rule checks (a limit group's rules agree on
the cap; a policy that defers needs `kafka.deferred_topic`) are in `bridge.rules.loader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.rules.evaluators import Compiler
from bridge.rules.fields import CompiledMessage, Problem, compile_message, root_problems
from bridge.rules.template import Render, TemplateError, parse_template

POLICY_KEYS = ("quiet_hours", "limit", "dedupe", "digest")
DIGEST_NAMES = ("items", "count")  # what a digest's message templates see
MAX_DIGEST_WINDOW_SECONDS = 600.0  # a digest in progress is bounded: at most 10 minutes of messages
MAX_DIGEST_ITEMS = 1000
MAX_LIMIT = 10_000
MAX_WINDOW_SECONDS = 7 * 86400.0  # dedupe and limit windows
_TIME_RE = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")
_GROUP_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

QuietAction = Literal["defer", "drop"]
OverAction = Literal["drop", "defer", "digest"]


@dataclass(frozen=True, slots=True)
class QuietHours:
    """No message between `start` and `end` (seconds after local midnight in `timezone`; may span midnight)."""

    start: int
    end: int
    timezone: str
    zone: ZoneInfo
    action: QuietAction


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `per_recipient` messages per recipient in any `per_seconds`, counted per `scope`."""

    per_recipient: int
    per_seconds: float
    over: OverAction
    scope: str  # the counter's name: the group, or the rule id
    group: str | None


@dataclass(frozen=True, slots=True)
class Dedupe:
    """A message whose rendered `key` was seen for the same recipient within `window_seconds` is not sent."""

    key: Render
    source: str
    window_seconds: float


@dataclass(frozen=True, slots=True)
class Digest:
    """Messages for one recipient within `window_seconds` (at most `max_items`) become one summary `message`."""

    window_seconds: float
    max_items: int
    message: CompiledMessage


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """The policies of one rule (each None when absent)."""

    rule: str
    quiet_hours: QuietHours | None = None
    limit: Limit | None = None
    dedupe: Dedupe | None = None
    digest: Digest | None = None

    @property
    def stateful(self) -> bool:
        """Decisions need the state store (counters, dedupe keys, digest windows); quiet hours alone do not."""
        return self.limit is not None or self.dedupe is not None or self.digest is not None

    @property
    def defers(self) -> str | None:
        """The key of the first policy that may write to the deferred topic, or None."""
        if self.quiet_hours is not None and self.quiet_hours.action == "defer":
            return "quiet_hours.action"
        if self.limit is not None and self.limit.over != "drop":
            return "limit.over"
        if self.digest is not None:
            return "digest"
        return None

    @property
    def folds_all(self) -> bool:
        """Every message goes into a digest (a digest without `limit.over: digest`)."""
        return self.digest is not None and (self.limit is None or self.limit.over != "digest")


class _Out:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: tuple[str | int, ...], reason: str) -> None:
        self.problems.append((path, reason))


def compile_policy(
    entry: dict[str, Any], rule_id: str, compiler: Compiler, phone: re.Pattern[str]
) -> tuple[RulePolicy | None, frozenset[str], list[Problem]]:
    """The rule's policies (None when it has none), the context names they read, and every problem found."""
    out = _Out()
    roots: set[str] = set()
    quiet = _quiet_hours(entry["quiet_hours"], out) if "quiet_hours" in entry else None
    digest = _digest(entry["digest"], compiler, phone, rule_id, out) if "digest" in entry else None
    limit = _limit(entry["limit"], rule_id, out) if "limit" in entry else None
    dedupe = _dedupe(entry["dedupe"], compiler, out, roots) if "dedupe" in entry else None
    if limit is not None and limit.over == "digest" and "digest" not in entry:
        out.add(("limit", "over"), "over: digest needs a digest block on the rule (window_seconds, message)")
    if out.problems or not any(key in entry for key in POLICY_KEYS):
        return None, frozenset(roots), out.problems
    return RulePolicy(rule_id, quiet, limit, dedupe, digest), frozenset(roots), []


def _mapping(value: Any, key: str, keys: frozenset[str], out: _Out, example: str) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        out.add((key,), f"expected a mapping, e.g. {example}")
        return None
    for k in value:
        if k not in keys:
            out.add((key, str(k)), f"unknown key (allowed: {', '.join(sorted(keys))})")
    return value


def _number(value: Any, path: tuple[str, ...], out: _Out, *, low: float, high: float, integer: bool) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        out.add(path, f"expected {kind} from {low:g} to {high:g}, got {value!r}")
        return None
    if not low <= value <= high:
        out.add(path, f"must be from {low:g} to {high:g}, got {value!r}")
        return None
    return value


def _choice(value: Any, path: tuple[str, ...], choices: tuple[str, ...], out: _Out) -> Any:
    if value not in choices:
        out.add(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return None
    return value


def _clock(value: Any, path: tuple[str, ...], out: _Out) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads an unquoted 22:30 as 1350
        out.add(path, f'write the time in quotes, "HH:MM" (YAML read an unquoted time as the number {value})')
        return None
    m = _TIME_RE.match(value) if isinstance(value, str) else None
    if m is None:
        out.add(path, f'expected a time "HH:MM" (00:00 to 23:59) or "HH:MM:SS", got {value!r}')
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)


def _quiet_hours(raw: Any, out: _Out) -> QuietHours | None:
    example = '{from: "22:30", to: "07:00", timezone: Asia/Shanghai, action: defer}'
    q = _mapping(raw, "quiet_hours", frozenset({"from", "to", "timezone", "action"}), out, example)
    if q is None:
        return None
    before = len(out.problems)
    for key in ("from", "to", "timezone"):
        if key not in q:
            out.add(("quiet_hours",), f"{key} is required, e.g. {example}")
    start = _clock(q["from"], ("quiet_hours", "from"), out) if "from" in q else None
    end = _clock(q["to"], ("quiet_hours", "to"), out) if "to" in q else None
    if start is not None and start == end:
        out.add(("quiet_hours", "to"), "is the same time as from: quiet hours would be empty (or the whole day)")
    action = _choice(q.get("action", "defer"), ("quiet_hours", "action"), ("defer", "drop"), out)
    zone = None
    name = q.get("timezone")
    if "timezone" in q:
        try:
            zone = ZoneInfo(name) if isinstance(name, str) and name else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is None:
            out.add(("quiet_hours", "timezone"), f"not an IANA time zone name (e.g. Asia/Shanghai), got {name!r}")
    if len(out.problems) > before or start is None or end is None or zone is None:
        return None
    return QuietHours(start, end, str(name), zone, action)


def _limit(raw: Any, rule_id: str, out: _Out) -> Limit | None:
    example = "{per_recipient: 5, per_seconds: 600, over: drop}"
    keys = frozenset({"per_recipient", "per_seconds", "over", "group"})
    lim = _mapping(raw, "limit", keys, out, example)
    if lim is None:
        return None
    before = len(out.problems)
    for key in ("per_recipient", "per_seconds"):
        if key not in lim:
            out.add(("limit",), f"{key} is required, e.g. {example}")
    cap = per = None
    if "per_recipient" in lim:
        cap = _number(lim["per_recipient"], ("limit", "per_recipient"), out, low=1, high=MAX_LIMIT, integer=True)
    if "per_seconds" in lim:
        per = _number(
            lim["per_seconds"], ("limit", "per_seconds"), out, low=0.001, high=MAX_WINDOW_SECONDS, integer=False
        )
    over = _choice(lim.get("over", "drop"), ("limit", "over"), ("drop", "defer", "digest"), out)
    group = lim.get("group")
    if group is not None and not (isinstance(group, str) and _GROUP_RE.fullmatch(group)):
        out.add(("limit", "group"), f"a group name is snake_case ([a-z][a-z0-9_]*), got {group!r}")
    if len(out.problems) > before or cap is None or per is None:
        return None
    return Limit(int(cap), float(per), over, group or rule_id, group)


def _dedupe(raw: Any, compiler: Compiler, out: _Out, roots: set[str]) -> Dedupe | None:
    example = '{key: "{{ event.post.id }}", window_seconds: 3600}'
    d = _mapping(raw, "dedupe", frozenset({"key", "window_seconds"}), out, example)
    if d is None:
        return None
    before = len(out.problems)
    for key in ("key", "window_seconds"):
        if key not in d:
            out.add(("dedupe",), f"{key} is required, e.g. {example}")
    window = None
    if "window_seconds" in d:
        window = _number(
            d["window_seconds"], ("dedupe", "window_seconds"), out, low=0.001, high=MAX_WINDOW_SECONDS, integer=False
        )
    source = d.get("key")
    render = None
    if "key" in d:
        if not isinstance(source, str) or not source.strip():
            out.add(("dedupe", "key"), f"expected a template, e.g. {example}")
        else:
            try:
                template = parse_template(source, compiler)
            except TemplateError as exc:
                out.add(("dedupe", "key"), f"bad template {source[:80]!r}: {exc.reason}")
            else:
                if template.is_constant:
                    out.add(("dedupe", "key"), "is constant: every message would be a duplicate of the first")
                for expr in template.expressions:
                    roots.update(expr.roots)
                    for reason in root_problems(expr, has_item=False, where="dedupe.key"):
                        out.add(("dedupe", "key"), reason.replace("only set in rules with for_each", _ITEM_KEY))
                render = template.render
    if len(out.problems) > before or render is None or window is None:
        return None
    return Dedupe(render, str(source), float(window))


_ITEM_KEY = "not read by dedupe.key (messages are de-duplicated per recipient already)"


def _digest(raw: Any, compiler: Compiler, phone: re.Pattern[str], rule_id: str, out: _Out) -> Digest | None:
    example = '{window_seconds: 300, max_items: 50, message: {json_data: {title: "{{ count }} new"}}}'
    d = _mapping(raw, "digest", frozenset({"window_seconds", "max_items", "message"}), out, example)
    if d is None:
        return None
    before = len(out.problems)
    for key in ("window_seconds", "message"):
        if key not in d:
            out.add(("digest",), f"{key} is required, e.g. {example}")
    window = None
    if "window_seconds" in d:
        window = _number(
            d["window_seconds"], ("digest", "window_seconds"), out, low=1, high=MAX_DIGEST_WINDOW_SECONDS, integer=False
        )
    items = _number(d.get("max_items", 50), ("digest", "max_items"), out, low=2, high=MAX_DIGEST_ITEMS, integer=True)
    message = None
    raw_message = d.get("message")
    if "message" in d:
        if not isinstance(raw_message, dict) or not raw_message:
            out.add(("digest", "message"), "expected a mapping of the API fields the summary sets, e.g. json_data")
        else:
            message, problems = compile_message(
                raw_message,
                compiler,
                phone=phone,
                has_item=False,
                rule_id=f"{rule_id} (digest)",
                names=DIGEST_NAMES,
                partial=True,
            )
            for sub, reason in problems:
                out.add(("digest", "message", *sub), reason)
    if len(out.problems) > before or message is None or window is None or items is None:
        return None
    return Digest(float(window), int(items), message)
