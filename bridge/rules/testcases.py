"""Rule tests (`bridge test`): parse test cases, run them against a RuleSet, explain any difference. Pure.

A test file is YAML with a top-level `tests:` list. Each case: `name`, `event` (the record value) or `events`
(several, consecutive records), `expect` (a list of `{rule, message}` / `{rule, error}` /
`{rule, digest: {count, message}}`; `[]` = notifies nobody), and optionally `topic`, `partition`, `offset`,
`timestamp_ms`, `key`, `headers` and `now` (the clock rule policies decide at: ISO-8601 with an offset or
epoch ms; default: `timestamp_ms`). Expected messages are compared as a subset: only the fields given; a
`json_data` mapping is compared as a subset of the decoded JSON; an expected `error` compares `field` exactly
and `reason` as a substring. A message of a rule with policies is expected to be sent unless the expectation
says `policy: {action: drop | defer | fold, by: …, until: …}` (compared as given). A `digest` is what the
daemon sends when a digest window is due. Items match in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.errors import ConfigIssue
from bridge.models import MESSAGE_FIELDS, Mapped, MappingFailure, RecordMeta
from bridge.policy.decide import Decision
from bridge.policy.dryrun import DigestOut, DryRun
from bridge.rules.coerce import RenderError, field_text, parse_millis
from bridge.rules.ruleset import RuleSet
from bridge.yamlsrc import Locator, PathKey, dotted

CASE_KEYS = frozenset(
    {"name", "topic", "partition", "offset", "timestamp_ms", "key", "headers", "event", "events", "now", "expect"}
)
POLICY_ACTIONS = ("send", "drop", "defer", "fold")
# The record timestamp of a case that gives none: fixed, so tests are reproducible.
DEFAULT_TIMESTAMP_MS = 1_717_372_800_000  # 2024-06-03T00:00:00Z


@dataclass(frozen=True, slots=True)
class Case:
    """One rule test."""

    name: str
    file: str
    line: int | None
    event: Any  # the first (or only) event
    meta: RecordMeta
    expect: tuple[dict[str, Any], ...]
    events: tuple[Any, ...] = ()  # every event, in order (offsets counting up from meta.offset)
    now_ms: int | None = None  # the clock policies decide at (None: the record timestamp)


@dataclass(frozen=True, slots=True)
class _Actual:
    """One thing a case produced: a mapped item (with its policy decision, if any) or a digest."""

    item: Mapped | MappingFailure | None
    decision: Decision | None = None
    digest: DigestOut | None = None

    @property
    def rule(self) -> str:
        return self.digest.rule if self.digest is not None else self.item.rule if self.item is not None else ""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: passed, or the differences found."""

    case: Case
    problems: tuple[str, ...]
    missing: tuple[tuple[str, str], ...] = ()  # (rule, field) whose whole-`{{ expr }}` resolved to missing

    @property
    def passed(self) -> bool:
        """No difference between expected and actual items."""
        return not self.problems


def parse_cases(
    data: Any, *, file: str, locator: Locator | None, ruleset: RuleSet, default_topic: str
) -> tuple[list[Case], list[ConfigIssue]]:
    """The cases of one test file, and every problem with the file itself (unknown rule ids, bad keys …)."""
    locator = locator or Locator()
    issues: list[ConfigIssue] = []

    def issue(path: PathKey, message: str) -> None:
        issues.append(ConfigIssue(file, dotted(path), message, locator.line(path)))

    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        hint = " (a rule file? it has `rules:`)" if isinstance(data, dict) and "rules" in data else ""
        return [], [ConfigIssue(file, "", f"not a test file: expected a top-level `tests:` list{hint}", 1)]
    cases: list[Case] = []
    for index, raw in enumerate(data["tests"]):
        path: PathKey = ("tests", index)
        before = len(issues)
        if not isinstance(raw, dict):
            issue(path, "expected a mapping with name, event and expect")
            continue
        for key in raw:
            if key not in CASE_KEYS:
                issue((*path, str(key)), "unknown key")
        for key in ("name", "expect"):
            if key not in raw:
                issue(path, f"{key} is required")
        if "event" not in raw and "events" not in raw:
            issue(path, "event is required")
        elif "event" in raw and "events" in raw:
            issue(path, "give event or events, not both")
        elif "events" in raw and (not isinstance(raw["events"], list) or not raw["events"]):
            issue((*path, "events"), "expected a non-empty list of events")
        now_ms = None
        if raw.get("now") is not None:
            try:
                now_ms = parse_millis(raw["now"])
            except RenderError as exc:
                issue((*path, "now"), f"{exc.reason} (ISO-8601 with an offset, or epoch ms)")
        expect = raw.get("expect")
        if "expect" in raw and not isinstance(expect, list):
            issue((*path, "expect"), "expected a list ([] = notifies nobody)")
        for j, item in enumerate(expect if isinstance(expect, list) else []):
            for problem in _expectation_problems(item, ruleset):
                issue((*path, "expect", j), problem)
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict):
            issue((*path, "headers"), "expected a mapping of header names to text")
        numbers: dict[str, int] = {"partition": 0, "offset": 0, "timestamp_ms": DEFAULT_TIMESTAMP_MS}
        for k in numbers:
            v = raw.get(k)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                issue((*path, k), "expected an integer")
            else:
                numbers[k] = v
        if len(issues) > before:
            continue
        key = raw.get("key")
        meta = RecordMeta(
            topic=str(raw.get("topic") or default_topic),
            partition=numbers["partition"],
            offset=numbers["offset"],
            timestamp_ms=numbers["timestamp_ms"],
            key=None if key is None else str(key).encode("utf-8"),
            headers=tuple((str(k), str(v).encode("utf-8")) for k, v in headers.items()),
        )
        name = str(raw["name"])
        events = tuple(raw["events"]) if "events" in raw else (raw["event"],)
        cases.append(Case(name, file, locator.line(path), events[0], meta, tuple(expect or ()), events, now_ms))
    return cases, issues


def _expectation_problems(item: Any, ruleset: RuleSet) -> list[str]:
    if not isinstance(item, dict) or "rule" not in item:
        return ["expected a mapping with rule and message (or error)"]
    problems = [f"unknown key {k!r}" for k in item if k not in {"rule", "message", "error", "policy", "digest"}]
    if item["rule"] not in ruleset.ids:
        problems.append(f"unknown rule {item['rule']!r} (rules: {', '.join(ruleset.ids)})")
    if sum(k in item for k in ("message", "error", "digest")) != 1:
        problems.append("give exactly one of message, error or digest")
    policy = item.get("policy")
    if "policy" in item and (not isinstance(policy, dict) or set(policy) - {"action", "by", "until"}):
        problems.append("policy must be a mapping with action, by and/or until")
    elif isinstance(policy, dict) and "action" in policy and policy["action"] not in POLICY_ACTIONS:
        problems.append(f"policy.action must be one of {', '.join(POLICY_ACTIONS)}")
    digest = item.get("digest")
    if "digest" in item and (not isinstance(digest, dict) or set(digest) - {"count", "message"}):
        problems.append("digest must be a mapping with count and/or message")
    message = item.get("message")
    if "message" in item and not isinstance(message, dict):
        problems.append("message must be a mapping of API fields")
    elif isinstance(message, dict):
        problems += [f"message.{k}: not an API field" for k in message if k not in MESSAGE_FIELDS]
    error = item.get("error")
    if "error" in item and (not isinstance(error, dict) or set(error) - {"field", "reason"}):
        problems.append("error must be a mapping with field and/or reason")
    return problems


def run_case(ruleset: RuleSet, case: Case) -> CaseResult:
    """Map the case's events, decide their policies, and compare with the expectations (any order)."""
    dry = DryRun(ruleset, case.now_ms if case.now_ms is not None else case.meta.timestamp_ms)
    actual: list[_Actual] = []
    missing: list[tuple[str, str]] = []
    for i, event in enumerate(case.events or (case.event,)):
        meta = replace(case.meta, offset=case.meta.offset + i)
        result = ruleset.map(event, meta)
        missing += result.missing
        for item in result.items:
            decision = dry.decide(item, event, meta, i) if isinstance(item, Mapped) else None
            actual.append(_Actual(item, decision))
    actual += [_Actual(None, digest=d) for d in dry.digests()]
    expected = case.expect
    fits = [[not _differences(e, a) for a in actual] for e in expected]
    pair = _match(fits, len(actual))
    problems: list[str] = []
    used = set(pair.values())
    for i, exp in enumerate(expected):
        if i in pair:
            continue
        same_rule = [a for j, a in enumerate(actual) if j not in used and a.rule == exp["rule"]]
        if not same_rule:
            problems.append(f"expected {_show_expected(exp)}, but got no (other) item from that rule")
        else:
            diffs = _differences(exp, same_rule[0])
            problems.append(f"expected {_show_expected(exp)}: " + "; ".join(diffs))
    problems += [f"unexpected {_show_actual(a)}" for j, a in enumerate(actual) if j not in used]
    return CaseResult(case, tuple(problems), tuple(dict.fromkeys(missing)))


def _match(fits: list[list[bool]], n_actual: int) -> dict[int, int]:
    """A maximum matching expected -> actual (augmenting paths; the lists are tiny)."""
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for j in range(n_actual):
            if fits[i][j] and j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(fits)):
        place(i, set())
    return {i: j for j, i in owner.items()}


def _differences(exp: dict[str, Any], actual: _Actual) -> list[str]:
    if actual.rule != exp["rule"]:
        return [f"rule is {actual.rule}"]
    if "digest" in exp or actual.digest is not None:
        return _digest_differences(exp, actual)
    act = actual.item
    assert act is not None
    if "error" in exp:
        if not isinstance(act, MappingFailure):
            return [f"got a message instead of an error: {_show_actual(actual)}"]
        want = exp["error"] or {}
        out = []
        if "field" in want and want["field"] != act.field:
            out.append(f"error field is {act.field!r} ({act.reason}), expected {want['field']!r}")
        if "reason" in want and str(want["reason"]) not in act.reason:
            out.append(f"error reason is {act.reason!r}, expected it to contain {want['reason']!r}")
        return out
    if isinstance(act, MappingFailure):
        return [f"got an error instead: {act.field}: {act.reason}"]
    out = _policy_differences(exp.get("policy"), actual.decision)
    return out + _message_differences(exp.get("message") or {}, act.message.to_api_dict())


def _policy_differences(want: dict[str, Any] | None, decision: Decision | None) -> list[str]:
    """An expected policy outcome against the decision (no expectation: the message must be sent)."""
    got = "send" if decision is None else decision.action
    if want is None:
        if got == "send":
            return []
        return [
            f"policy decided {got} by {decision.by if decision else None} (expect it with policy: {{action: {got}}})"
        ]
    out = []
    if "action" in want and want["action"] != got:
        out.append(f"policy action is {got}, expected {want['action']}")
    by = decision.by if decision is not None else None
    if "by" in want and want["by"] != by:
        out.append(f"policy by is {by}, expected {want['by']}")
    if "until" in want:
        until = decision.until_ms if decision is not None else None
        try:
            same = until == parse_millis(want["until"])
        except RenderError:
            same = False
        if not same:
            out.append(f"policy until is {_time(until)}, expected {want['until']}")
    return out


def _digest_differences(exp: dict[str, Any], actual: _Actual) -> list[str]:
    digest = actual.digest
    if digest is None:
        return [f"got {_show_actual(actual)} instead of a digest"]
    if "digest" not in exp:
        return [f"got a digest of {digest.count} instead"]
    want = exp["digest"] or {}
    out = []
    if "count" in want and want["count"] != digest.count:
        out.append(f"digest count is {digest.count}, expected {want['count']}")
    if digest.message is None:
        return [*out, f"the digest's summary cannot be made: {digest.error}"]
    return out + _message_differences(want.get("message") or {}, digest.message.to_api_dict())


def _time(ms: int | None) -> str:
    if ms is None:
        return "none"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _message_differences(expected: dict[str, Any], wire: dict[str, Any]) -> list[str]:
    out = []
    for name, want in expected.items():
        got = wire.get(name)
        if name == "json_data" and isinstance(want, dict | list):
            decoded = orjson.loads(got) if isinstance(got, str) else got
            out += [f"json_data{p}" for p in _subset_diff(want, decoded, "")]
        elif not _same_scalar(name, want, got):
            out.append(f"{name} is {got!r}, expected {want!r}")
    return out


def _same_scalar(name: str, want: Any, got: Any) -> bool:
    if want is None or got is None:
        return want is got
    try:
        if name == "event_time_millis":
            return bool(parse_millis(want) == got)
        return bool(field_text(want) == got)
    except RenderError:
        return False


def _subset_diff(want: Any, got: Any, path: str) -> list[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path or ''} is {_short(got)}, expected an object"]
        out: list[str] = []
        for key, sub in want.items():
            if key not in got:
                out.append(f"{path}.{key} is missing")
            else:
                out += _subset_diff(sub, got[key], f"{path}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path} is {_short(got)}, expected {_short(want)}"]
        return [d for i, (w, g) in enumerate(zip(want, got, strict=True)) for d in _subset_diff(w, g, f"{path}[{i}]")]
    if want != got or isinstance(want, bool) != isinstance(got, bool):
        return [f"{path} is {_short(got)}, expected {_short(want)}"]
    return []


def _short(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode("utf-8")
    return text if len(text) <= 120 else text[:119] + "…"


def _show_expected(exp: dict[str, Any]) -> str:
    what = "error" if "error" in exp else "message"
    return f"{exp['rule']} {what} {_short(exp.get(what) or {})}"


def _show_actual(actual: _Actual) -> str:
    if actual.digest is not None:
        d = actual.digest
        shown = _short(d.message.to_api_dict()) if d.message is not None else f"(cannot be made: {d.error})"
        return f"{d.rule} digest of {d.count} due {_time(d.due_ms)} {shown}"
    act = actual.item
    assert act is not None
    if isinstance(act, MappingFailure):
        return f"{act.rule} error {act.field}: {act.reason}"
    decided = ""
    if actual.decision is not None and actual.decision.action != "send":
        d2 = actual.decision
        decided = f" ({d2.action} by {d2.by}" + (f" until {_time(d2.until_ms)})" if d2.until_ms else ")")
    return f"{act.rule} message {_short(act.message.to_api_dict())}{decided}"
