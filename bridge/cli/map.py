"""`bridge map -c FILE [--input FILE|-]`: dry run of the rules over JSON events, one JSON line per result.

Output lines (every one carries `line`, the 1-based input line):
- `{"line": N, "rule": R, "message": {...}}`             a message, exactly as it would be sent;
- `{"line": N, "rule": R, "error": {"field": F, "reason": T}}`  a mapping failure (would be dead-lettered);
- `{"line": N, "error": {"field": "$", "reason": T}}`    the line is not JSON, or not a JSON object;
- `{"line": N, "rule": R, "empty_fanout": true}`         the rule matched but `for_each` gave nothing;
- `{"line": N, "unmatched": true}`                       no rule applied.
A message of a rule with policies (quiet_hours, limit, dedupe, digest) also carries what they decide at `--now`
(default: the current time), the lines taken in order as one burst:
  `"policy": {"action": "send"|"drop"|"defer"|"fold", "by": POLICY, "until": TIME, "window": ID}`;
and after the last line, each digest the daemon would send when it is due (its summary, or its one message):
- `{"line": N, "rule": R, "digest": {"count": C, "lines": [...], "due": TIME}, "message": {...}}` (N: its last line),
  or with `"error": {"field": F, "reason": T}` instead of `message` when the summary cannot be made.
TIME is ISO-8601 in the offset of `--now` (UTC by default).
With `--explain`, each input line first gets one line per rule saying why it matched or not:
- `{"line": N, "rule": R, "explain": {"matched": B, "why": T, "when": {"source", "holds", "terms": [...]}}}`
  (each `&&`/`||` term of `when` with its value, both sides of a comparison, the operand of a `!`).
Warnings go to stderr: `warning: line N: rule R: FIELD: {{ expr }}: event.x has no key 'y'; the field is left
out` for every field whose whole-`{{ expr }}` template resolved to missing (a typo in an optional field).
Blank lines are skipped. Exit status 1 if any line is an error, else 0; 2 for a bad config or rule.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from typing import IO, TYPE_CHECKING, Any

import orjson

from bridge.cli import add_config_argument
from bridge.models import Mapped, RecordMeta
from bridge.settings import config_path, load_settings
from bridge.topics import topic_name_problem

if TYPE_CHECKING:
    from bridge.policy.decide import Decision
    from bridge.policy.dryrun import DryRun
    from bridge.rules import RuleSet
    from bridge.settings import Settings

NAME = "map"
HELP = "dry run: map JSON events (one per line) through the rules and print the messages"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.add_argument("--input", "-i", default="-", metavar="FILE", help="JSON lines to map (default: - for stdin)")
    p.add_argument("--topic", help="topic the records come from (default: the first of kafka.topics)")
    p.add_argument("--partition", type=int, default=0, help="partition (default: 0)")
    p.add_argument("--offset", type=int, default=0, help="offset of the first line, +1 per line (default: 0)")
    p.add_argument("--timestamp-ms", type=int, default=None, help="record timestamp (default: now)")
    p.add_argument("--key", default=None, help="record key (default: none)")
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="a record header (repeatable)")
    p.add_argument(
        "--explain", action="store_true", help="also print, per rule, why it matched or not (when terms and values)"
    )
    p.add_argument(
        "--now",
        metavar="TIME",
        help="the clock rule policies decide at: ISO-8601 with an offset, or epoch ms (default: now)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Map every input line; print one JSON line per result; 1 if any error."""
    from bridge.policy.dryrun import DryRun
    from bridge.rules import load_rules

    settings = load_settings(config_path(args.config))
    ruleset = load_rules(settings)
    topic = args.topic or (settings.kafka.topics[0] if settings.kafka.topics else None)
    if topic is None:
        print("error: --topic is required when kafka uses topic_pattern", file=sys.stderr)
        return 2
    problem = topic_name_problem(topic)
    if problem:
        print(f"error: --topic: {problem}", file=sys.stderr)
        return 2
    headers = []
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"error: --header expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        headers.append((name, value.encode("utf-8")))
    base = RecordMeta(
        topic=topic,
        partition=args.partition,
        offset=args.offset,
        timestamp_ms=args.timestamp_ms if args.timestamp_ms is not None else int(time.time() * 1000),
        key=args.key.encode("utf-8") if args.key is not None else None,
        headers=tuple(headers),
    )
    explain = None
    if args.explain:
        explain = _not_consumed(settings, topic) or ""
    clock = parse_now(args.now)
    if isinstance(clock, str):
        print(f"error: --now: {clock}", file=sys.stderr)
        return 2
    dry = DryRun(ruleset, clock[0]) if ruleset.policies else None
    if args.input == "-":
        if isinstance(sys.stdin, io.TextIOWrapper):  # bad UTF-8 is reported per line, not a crash
            sys.stdin.reconfigure(errors="surrogateescape")
        return _map_lines(sys.stdin, ruleset, base, explain, dry=dry, zone=clock[1])
    try:
        stream = open(args.input, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"error: cannot read {args.input}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    with stream:
        return _map_lines(stream, ruleset, base, explain, dry=dry, zone=clock[1])


def parse_now(text: str | None) -> tuple[int, tzinfo] | str:
    """(epoch ms, the zone to print times in) of `--now` (ISO-8601 with an offset, or epoch ms), or the problem."""
    from bridge.rules.coerce import RenderError, parse_millis

    if text is None:
        return time.time_ns() // 1_000_000, UTC
    try:
        ms = parse_millis(text)
    except RenderError as exc:
        return f"{exc.reason} (e.g. 2024-06-03T03:00:00+08:00)"
    zone: tzinfo = UTC
    if not text.strip().isdigit():
        zone = datetime.fromisoformat(text.strip().replace("Z", "+00:00")).tzinfo or UTC
    return ms, zone


def iso(ms: int, zone: tzinfo) -> str:
    """An epoch-ms time as ISO-8601 text in `zone`."""
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


def policy_view(decision: Decision, zone: tzinfo) -> dict[str, Any]:
    """What `bridge map` and `bridge test` show of a policy decision."""
    view: dict[str, Any] = {"action": decision.action}
    if decision.by is not None:
        view["by"] = decision.by
    if decision.until_ms is not None:
        view["until"] = iso(decision.until_ms, zone)
    if decision.window is not None:
        view["window"] = decision.window
    return view


def _not_consumed(settings: Settings, topic: str) -> str | None:
    """Why the daemon would never read `topic` with this config, or None when it would."""
    k = settings.kafka
    if topic in k.topics or (k.topic_pattern and re.match(k.topic_pattern, topic)):
        return None
    listed = f"kafka.topics: {', '.join(k.topics)}" if k.topics else f"kafka.topic_pattern: {k.topic_pattern}"
    return f"topic {topic} is not consumed ({listed})"


def _map_lines(
    stream: Iterable[str],
    ruleset: RuleSet,
    base: RecordMeta,
    explain: str | None,
    *,
    dry: DryRun | None = None,
    zone: tzinfo = UTC,
) -> int:
    """`explain`: None (no explanations), "" (explain), or why the records' topic is not consumed."""
    failed = False
    out: IO[str] = sys.stdout

    def write(line: dict[str, Any]) -> None:
        try:
            out.write(orjson.dumps(line).decode("utf-8") + "\n")
        except orjson.JSONEncodeError:  # a reason quoting invalid text: escape it rather than fail
            out.write(json.dumps(line) + "\n")

    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        meta = replace(base, offset=base.offset + number - 1)
        lines, warnings = map_line(ruleset, number, text, meta, explain=explain, dry=dry, zone=zone)
        for line in lines:
            failed = failed or "error" in line
            write(line)
        for warning in warnings:
            print(f"warning: line {number}: {warning}", file=sys.stderr)
    for digest in dry.digests() if dry is not None else ():
        line = {
            "line": digest.tags[-1],
            "rule": digest.rule,
            "digest": {"count": digest.count, "lines": list(digest.tags), "due": iso(digest.due_ms, zone)},
        }
        if digest.message is not None:
            line["message"] = digest.message.to_api_dict()
        else:
            failed = True
            line["error"] = {"field": "digest.message", "reason": digest.error}
        write(line)
    out.flush()
    return 1 if failed else 0


def map_line(
    ruleset: RuleSet,
    number: int,
    text: str,
    meta: RecordMeta,
    *,
    explain: str | None = None,
    dry: DryRun | None = None,
    zone: tzinfo = UTC,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The output objects for one input line, and its warnings (`rule R: FIELD: why; effect`)."""
    from bridge.rules.explain import explain_rules, missing_detail, missing_effect

    try:
        event = orjson.loads(text.encode("utf-8", "surrogateescape"))
    except orjson.JSONDecodeError as exc:
        return [{"line": number, "error": {"field": "$", "reason": f"not JSON: {exc}"}}], []
    if not isinstance(event, dict):
        kind = "array" if isinstance(event, list) else type(event).__name__
        return [{"line": number, "error": {"field": "$", "reason": f"not a JSON object: got {kind}"}}], []
    lines: list[dict[str, Any]] = []
    if explain is not None:
        for entry in explain_rules(ruleset, event, meta, not_consumed=explain or None):
            lines.append({"line": number, "rule": entry.pop("rule"), "explain": entry})
    result = ruleset.map(event, meta)
    warnings = []
    for rule_id, field in result.missing:
        rule = ruleset.get(rule_id)
        assert rule is not None
        detail = missing_detail(rule, field, event, meta, ruleset)
        warnings.append(f"rule {rule_id}: {field}: {detail}; {missing_effect(field)}")
    if result.unmatched:
        return [*lines, {"line": number, "unmatched": True}], warnings
    for item in result.items:
        if isinstance(item, Mapped):
            out = {"line": number, "rule": item.rule, "message": item.message.to_api_dict()}
            decision = dry.decide(item, event, meta, number) if dry is not None else None
            if decision is not None:
                out["policy"] = policy_view(decision, zone)
            lines.append(out)
        else:
            error = {"field": item.field, "reason": item.reason}
            lines.append({"line": number, "rule": item.rule, "error": error})
    lines.extend({"line": number, "rule": rule, "empty_fanout": True} for rule in result.empty_fanout)
    return lines, warnings
