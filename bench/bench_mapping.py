"""Micro-benchmark: map the sample events through the shipped rules; events/s per core and µs/event.

Run:  .venv/bin/python bench/bench_mapping.py [--rounds 5] [--events 100000]

The shipped rules (config/rules/*.yaml) are loaded as `bridge run` would load them; the events are
config/examples/events.jsonl, decoded once and cycled, each at a fresh offset on campus.forum.events
(the topic `bridge map` uses by default, on which every sample maps as documented). CPU time is measured
with time.process_time, so the figure is per core; the median of the rounds is reported, as a table and as
one JSON line (`{"bench": "mapping", ...}`) for tooling.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import orjson

from bridge.models import Mapped, RecordMeta
from bridge.rules import RuleSet, load_rules
from bridge.settings import parse_settings

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "campus.forum.events"
TARGET_EVENTS_PER_S = 50_000


def load() -> tuple[RuleSet, list[object]]:
    """The shipped rules and the decoded sample events."""
    settings = parse_settings(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": [TOPIC]},
            "gateway": {"app_key": "bench", "app_secret": "bench"},
            "rules": {"rule_files": [str(ROOT / "config" / "rules" / "*.yaml")]},
        }
    )
    lines = (ROOT / "config" / "examples" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return load_rules(settings), [orjson.loads(line) for line in lines if line.strip()]


def one_round(ruleset: RuleSet, events: list[object], n: int) -> tuple[float, int, int]:
    """CPU seconds to map `n` events, and how many messages / failures they gave."""
    metas = [RecordMeta(TOPIC, 0, offset, 1_717_372_800_000) for offset in range(n)]
    batch = [events[i % len(events)] for i in range(n)]
    messages = failures = 0
    gc.collect()
    start = time.process_time()
    for event, meta in zip(batch, metas, strict=True):
        for item in ruleset.map(event, meta).items:
            if isinstance(item, Mapped):
                messages += 1
            else:
                failures += 1
    return time.process_time() - start, messages, failures


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table and the JSON line; exit 1 below the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000, help="events per round")
    args = parser.parse_args(argv)
    ruleset, events = load()
    one_round(ruleset, events, min(args.events, 5_000))  # warm-up
    seconds: list[float] = []
    messages = failures = 0
    for _ in range(args.rounds):
        spent, messages, failures = one_round(ruleset, events, args.events)
        seconds.append(spent)
    median, best = statistics.median(seconds), min(seconds)
    rate = args.events / median
    us = median / args.events * 1e6
    print(f"rules: {len(ruleset)}   sample events: {len(events)}   events/round: {args.events}")
    print(f"messages/event: {messages / args.events:.2f}   failures/event: {failures / args.events:.2f}")
    print()
    print(f"{'round':>5}  {'cpu s':>8}  {'events/s':>10}  {'µs/event':>9}")
    for i, s in enumerate(seconds, 1):
        print(f"{i:>5}  {s:>8.3f}  {args.events / s:>10,.0f}  {s / args.events * 1e6:>9.2f}")
    print(f"{'best':>5}  {best:>8.3f}  {args.events / best:>10,.0f}  {best / args.events * 1e6:>9.2f}")
    print(f"{'median':>5}  {median:>8.3f}  {rate:>10,.0f}  {us:>9.2f}")
    print(f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs: other processes slow every figure)")
    print()
    result = {
        "bench": "mapping",
        "python": sys.version.split()[0],
        "rules": len(ruleset),
        "events_per_round": args.events,
        "rounds": args.rounds,
        "events_per_s_per_core_median": round(rate),
        "us_per_event_median": round(us, 3),
        "events_per_s_per_core_best": round(args.events / best),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "messages_per_event": round(messages / args.events, 3),
        "target_events_per_s": TARGET_EVENTS_PER_S,
    }
    print(json.dumps(result))
    return 0 if rate >= TARGET_EVENTS_PER_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
