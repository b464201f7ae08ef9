"""`bridge dlq inspect|replay -c FILE [--since …] [--reason …]`: list or re-publish dead letters."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from bridge.cli import add_config_argument
from bridge.logs import quiet_logger
from bridge.settings import config_path, load_settings

if TYPE_CHECKING:
    from bridge.kafka.letters import Letter, LetterFilter

NAME = "dlq"
HELP = "work with the dead-letter topic (inspect, replay)"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")

INSPECT_DESCRIPTION = (
    "List the letters on the dead-letter topic (kafka.dead_letter_topic), one line each: when, where it is, "
    "reason, rule, the source record (topic/partition@offset), the masked recipient, the gateway code and the "
    "error. Read-only: no consumer group, nothing committed, nothing sent. Filters combine; times are when the "
    "letter was written."
)
REPLAY_DESCRIPTION = (
    "Re-publish dead letters to their source topics once the cause is fixed (a producer bug, a rule, a recipient "
    "the gateway refused). Each letter goes back with its original key, value and headers plus "
    "bridge.replay.origin and bridge.replay.rule: the bridge then applies only the rule that failed and derives "
    "the same msg_key as the first time, so the gateway can de-duplicate. --dry-run lists the letters that would "
    "be replayed and sends nothing."
)


def parse_time(text: str, now_ms: int | None = None) -> int:
    """`30m`, `2h`, `1d` (ago) or an ISO-8601 time with offset -> epoch ms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    m = _DURATION.match(text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now_ms - int(float(m.group(1)) * unit * 1000)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 30m, 2h, 1d or ISO-8601, got {text!r}") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError("give the time with an offset, e.g. 2026-11-27T08:00:00+08:00")
    return int(dt.timestamp() * 1000)


parse_since = parse_time  # the name the replay option had first


def _add_filters(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--since", type=parse_time, help="only letters written since (30m, 2h, 1d ago, or ISO-8601)")
    p.add_argument("--until", type=parse_time, help="only letters written before (30m, 2h, 1d ago, or ISO-8601)")
    p.add_argument(
        "--reason",
        action="append",
        help="only this reason (repeatable): not_json, not_utf8, not_object, oversized, empty_value, mapping_error, "
        "rejected, retries_exhausted, max_age",
    )
    p.add_argument("--rule", help="only letters of this rule")
    p.add_argument("--limit", type=int, help="at most N letters")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq inspect` and `dlq replay` to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    inner = p.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)
    i = inner.add_parser("inspect", help="list dead letters (read-only)", description=INSPECT_DESCRIPTION)
    _add_filters(i)
    i.add_argument("--json", action="store_true", help="one JSON object a line instead of text")
    i.set_defaults(func=run_inspect)
    r = inner.add_parser(
        "replay",
        help="re-publish dead letters to their source topic (same msg_keys, only the failed rule)",
        description=REPLAY_DESCRIPTION,
    )
    _add_filters(r)
    r.add_argument("--dry-run", action="store_true", help="list what would be replayed; send nothing")
    r.set_defaults(func=run_replay)


def _filter(args: argparse.Namespace) -> LetterFilter:
    from bridge.kafka.letters import LetterFilter

    return LetterFilter(
        since_ms=args.since,
        until_ms=args.until,
        reasons=frozenset(args.reason) if args.reason else None,
        rule=args.rule,
    )


def letter_line(letter: Letter) -> str:
    """One letter as a line of text, phone numbers masked."""
    s = letter.summary()
    when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
    code = " ".join(str(v) for v in (s["code"], s["sub_code"]) if v)
    parts = [
        when.replace("+00:00", "Z"),
        f"dlq={letter.partition}@{letter.offset}",
        f"reason={s['reason']}",
        f"rule={s['rule'] or '-'}",
        f"source={s['source']}",
        f"to={s['recipient'] or '-'}",
    ]
    if s["field"]:
        parts.append(f"field={s['field']}")
    if code:
        parts.append(f"code={code}")
    if s["attempts"] and s["attempts"] != "0":
        parts.append(f"attempts={s['attempts']}")
    if s["error"]:
        parts.append(f"error={s['error']}")
    return "  ".join(parts)


def run_inspect(args: argparse.Namespace) -> int:
    """List the letters that pass the filters."""
    import contextlib

    from bridge.cli.run import run_loop
    from bridge.kafka.letters import read_letters

    settings = load_settings(config_path(args.config))
    flt = _filter(args)

    async def go() -> int:
        scanned = shown = 0
        async with contextlib.aclosing(read_letters(settings.kafka, flt.since_ms)) as letters:
            async for letter in letters:
                scanned += 1
                if not flt.accepts(letter):
                    continue
                if args.limit is not None and shown >= args.limit:
                    break
                shown += 1
                if args.json:
                    sys.stdout.write(orjson.dumps(letter.summary()).decode() + "\n")
                else:
                    print(letter_line(letter))
        noun = "dead letter" if shown == 1 else "dead letters"
        print(f"{shown} {noun} shown ({scanned} read from {settings.kafka.dead_letter_topic})", file=sys.stderr)
        return 0

    with quiet_logger("aiokafka"):  # an unreachable broker is one `error:` line, not aiokafka's retries
        return run_loop(go())


def run_replay(args: argparse.Namespace) -> int:
    """Replay (or, with --dry-run, list) and print a summary."""
    from bridge.cli.run import run_loop
    from bridge.kafka.replay import replay_dead_letters

    settings = load_settings(config_path(args.config))

    def show(letter: Letter, topic: str) -> None:
        print(f"{letter_line(letter)}  -> {topic}")

    async def go() -> int:
        report = await replay_dead_letters(
            settings.kafka, _filter(args), limit=args.limit, dry_run=args.dry_run, each=show if args.dry_run else None
        )
        verb = "would replay" if args.dry_run else "replayed"
        print(f"scanned {report.scanned} dead letters; {verb} {report.replayed}; skipped {report.skipped}")
        for topic, n in sorted(report.by_topic.items()):
            print(f"  {topic}: {n}")
        return 0

    with quiet_logger("aiokafka"):
        return run_loop(go())
