"""`bridge dlq replay -c FILE [--since …] [--reason …]`: re-publish dead letters to their source topics."""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime

from bridge.cli import add_config_argument
from bridge.settings import config_path, load_settings

NAME = "dlq"
HELP = "work with the dead-letter topic (replay)"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str, now_ms: int | None = None) -> int:
    """`30m`, `2h`, `1d` (ago) or an ISO-8601 time with offset -> epoch ms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    m = _DURATION.match(text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now_ms - int(float(m.group(1)) * unit * 1000)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: expected e.g. 30m, 2h, 1d or ISO-8601, got {text!r}") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError("--since: give the time with an offset, e.g. 2026-11-27T08:00:00+08:00")
    return int(dt.timestamp() * 1000)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq replay` to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    inner = p.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)
    r = inner.add_parser(
        "replay",
        help="re-publish dead letters to their source topic (same msg_keys, only the failed rule)",
    )
    add_config_argument(r)
    r.add_argument("--since", type=parse_since, help="only letters dead-lettered since (30m, 2h, 1d, ISO-8601)")
    r.add_argument("--reason", action="append", help="only this reason (repeatable): rejected, retries_exhausted, …")
    r.add_argument("--rule", help="only letters of this rule")
    r.add_argument("--limit", type=int, help="replay at most N letters")
    r.add_argument("--dry-run", action="store_true", help="count what would be replayed; send nothing")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay and print a summary."""
    from bridge.cli.run import run_loop
    from bridge.kafka.replay import ReplayFilter, replay_dead_letters

    settings = load_settings(config_path(args.config))
    flt = ReplayFilter(
        since_ms=args.since,
        reasons=frozenset(args.reason) if args.reason else None,
        rule=args.rule,
        limit=args.limit,
    )

    async def go() -> int:
        report = await replay_dead_letters(settings.kafka, flt, dry_run=args.dry_run)
        verb = "would replay" if args.dry_run else "replayed"
        print(f"scanned {report.scanned} dead letters; {verb} {report.replayed}; skipped {report.skipped}")
        for topic, n in sorted(report.by_topic.items()):
            print(f"  {topic}: {n}")
        return 0

    return run_loop(go())
