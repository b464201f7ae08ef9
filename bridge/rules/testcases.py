"""Rule tests (`bridge test`): parse test cases, run them against a RuleSet, explain any difference. Pure.

A test file is YAML with a top-level `tests:` list. Each case: `name`, `event` (the record value), `expect`
(a list of `{rule, message}` / `{rule, error}`; `[]` = notifies nobody), and optionally `topic`, `partition`,
`offset`, `timestamp_ms`, `key`, `headers`. Expected messages are compared as a subset: only the fields given;
a `json_data` mapping is compared as a subset of the decoded JSON; an expected `error` compares `field`
exactly and `reason` as a substring. Items match in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.errors import ConfigIssue
from bridge.models import MESSAGE_FIELDS, Mapped, MappingFailure, RecordMeta
from bridge.rules.coerce import RenderError, field_text, parse_millis
from bridge.rules.ruleset import RuleSet
from bridge.yamlsrc import Locator, PathKey, dotted

CASE_KEYS = frozenset({"name", "topic", "partition", "offset", "timestamp_ms", "key", "headers", "event", "expect"})
# The record timestamp of a case that gives none: fixed, so tests are reproducible.
DEFAULT_TIMESTAMP_MS = 1_717_372_800_000  # 2024-06-03T00:00:00Z


@dataclass(frozen=True, slots=True)
class Case:
    """One rule test."""

    name: str
    file: str
    line: int | None
    event: Any
    meta: RecordMeta
    expect: tuple[dict[str, Any], ...]


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
        for key in ("name", "event", "expect"):
            if key not in raw:
                issue(path, f"{key} is required")
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
        cases.append(Case(name, file, locator.line(path), raw["event"], meta, tuple(expect or ())))
    return cases, issues


def _expectation_problems(item: Any, ruleset: RuleSet) -> list[str]:
    if not isinstance(item, dict) or "rule" not in item:
        return ["expected a mapping with rule and message (or error)"]
    problems = [f"unknown key {k!r}" for k in item if k not in {"rule", "message", "error"}]
    if item["rule"] not in ruleset.ids:
        problems.append(f"unknown rule {item['rule']!r} (rules: {', '.join(ruleset.ids)})")
    if ("message" in item) == ("error" in item):
        problems.append("give exactly one of message or error")
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
    """Map the case's event and compare the items with the expectations (any order)."""
    result = ruleset.map(case.event, case.meta)
    actual = result.items
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
    return CaseResult(case, tuple(problems), result.missing)


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


def _differences(exp: dict[str, Any], act: Mapped | MappingFailure) -> list[str]:
    if act.rule != exp["rule"]:
        return [f"rule is {act.rule}"]
    if "error" in exp:
        if not isinstance(act, MappingFailure):
            return [f"got a message instead of an error: {_show_actual(act)}"]
        want = exp["error"] or {}
        out = []
        if "field" in want and want["field"] != act.field:
            out.append(f"error field is {act.field!r} ({act.reason}), expected {want['field']!r}")
        if "reason" in want and str(want["reason"]) not in act.reason:
            out.append(f"error reason is {act.reason!r}, expected it to contain {want['reason']!r}")
        return out
    if isinstance(act, MappingFailure):
        return [f"got an error instead: {act.field}: {act.reason}"]
    wire = act.message.to_api_dict()
    out = []
    for name, want in (exp.get("message") or {}).items():
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


def _show_actual(act: Mapped | MappingFailure) -> str:
    if isinstance(act, MappingFailure):
        return f"{act.rule} error {act.field}: {act.reason}"
    return f"{act.rule} message {_short(act.message.to_api_dict())}"
