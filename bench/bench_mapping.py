"""Micro-benchmark: map the sample events through the shipped rules; events/s per core and µs/event.

Run:  .venv/bin/python bench/bench_mapping.py [--rounds 5] [--events 100000] [--pipeline]

The shipped rules (config/rules/*.yaml) are loaded as `bridge run` would load them; the events are
config/examples/events.jsonl, decoded once and cycled, each at a fresh offset on campus.forum.events
(the topic `bridge map` uses by default, on which every sample maps as documented). CPU time is measured
with time.process_time, so the figure is per core; the median of the rounds is reported, as a table and as
one JSON line (`{"bench": "mapping", ...}`) for tooling.

`--pipeline` measures one step more, what the daemon does per fetched record before delivery: `Pipeline.take`
(decode the raw value, map, track the offset, hand each message to the engine) with an engine that finishes
every job at once. The shipped rules' policies (quiet hours, limits, de-duplication, digests) are left out
there, so the figure is the cost of the path every record without a policy takes (`{"bench": "pipeline"}`).
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

from bridge.kafka.offsets import PartitionOffsets
from bridge.metrics import Metrics
from bridge.models import Mapped, RecordMeta
from bridge.pipeline import Pipeline
from bridge.rules import RuleSet, compile_rules, load_rules
from bridge.settings import Settings, parse_settings
from bridge.work import DeadLetter, Job, PartitionState

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "campus.forum.events"
TARGET_EVENTS_PER_S = 50_000


POLICY_KEYS = ("quiet_hours", "limit", "dedupe", "digest")


def _settings() -> Settings:
    return parse_settings(
        {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9092",
                "topics": [TOPIC],
                "deferred_topic": "campus-bridge.deferred",
            },
            "gateway": {"app_key": "bench", "app_secret": "bench"},
            "rules": {"rule_files": [str(ROOT / "config" / "rules" / "*.yaml")]},
        }
    )


def _sample_lines() -> list[str]:
    lines = (ROOT / "config" / "examples" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def load() -> tuple[RuleSet, list[object]]:
    """The shipped rules and the decoded sample events."""
    return load_rules(_settings()), [orjson.loads(line) for line in _sample_lines()]


def rules_without_policies() -> RuleSet:
    """The shipped rules with every policy block removed (the path of a record no policy applies to)."""
    import yaml

    raw: list[dict[str, object]] = []
    for path in sorted((ROOT / "config" / "rules").glob("*.yaml")):
        raw += yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]
    for rule in raw:
        for key in POLICY_KEYS:
            rule.pop(key, None)
    return compile_rules(raw)


class _FinishingEngine:
    """The pipeline's engine port: every job and dead letter is final at once (no delivery cost measured)."""

    unfinished = 0

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, job: Job) -> None:
        self.jobs += 1
        job.record.complete(job.index)

    def dead_letter(self, letter: DeadLetter) -> None:
        letter.record.complete(letter.index)

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        return True


def pipeline_round(n: int) -> tuple[float, int]:
    """CPU seconds for `Pipeline.take` of `n` raw sample records, and the messages handed on."""
    settings = _settings()
    engine = _FinishingEngine()
    pipeline = Pipeline(settings, rules_without_policies(), engine, Metrics(), wall_ms=lambda: 1_717_372_800_000)
    raw = [line.encode("utf-8") for line in _sample_lines()]
    part = PartitionState(TOPIC, 0, PartitionOffsets(10_000, 0))
    metas = [RecordMeta(TOPIC, 0, offset, 1_717_372_800_000) for offset in range(n)]
    values = [raw[i % len(raw)] for i in range(n)]
    gc.collect()
    start = time.process_time()
    for meta, value in zip(metas, values, strict=True):
        pipeline.take(part, meta, value)
    return time.process_time() - start, engine.jobs


def main_pipeline(rounds: int, events: int) -> int:
    """`--pipeline`: the per-record cost of `Pipeline.take` without policies."""
    pipeline_round(min(events, 5_000))  # warm-up
    results = [pipeline_round(events) for _ in range(rounds)]
    seconds = [s for s, _ in results]
    median = statistics.median(seconds)
    print(f"Pipeline.take, shipped rules without policies, {events} records/round, {rounds} rounds")
    for i, s in enumerate(seconds, 1):
        print(f"{i:>5}  {s:>8.3f} cpu s  {events / s:>10,.0f} records/s  {s / events * 1e6:>7.2f} µs/record")
    print(f"median {median / events * 1e6:.2f} µs/record (load average {os.getloadavg()[0]:.2f})")
    result = {
        "bench": "pipeline",
        "records_per_round": events,
        "rounds": rounds,
        "us_per_record_median": round(median / events * 1e6, 3),
        "us_per_record_best": round(min(seconds) / events * 1e6, 3),
        "messages_per_record": round(results[-1][1] / events, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


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
    parser.add_argument("--pipeline", action="store_true", help="measure Pipeline.take instead of RuleSet.map")
    args = parser.parse_args(argv)
    if args.pipeline:
        return main_pipeline(args.rounds, args.events)
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
