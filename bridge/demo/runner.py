"""`bridge demo`: start the local stack, feed generated campus events, print a live summary, clean up.

scripts/kafka-local (broker) ── bridge gateway-sim ── bridge run -c config/demo.yaml
             ▲                                                     │
    generator (this process) ──► campus.*.events ──────────────────┘

The rules' policies run on the demo's clock, so a few minutes show them all: the bridge gets copies of the
rule files (in the demo's work folder; the shipped ones are unchanged) whose quiet hours are the next
`NIGHT_SECONDS` (the campus night begins when the demo starts) and whose limit, dedupe and digest windows are
`TIME_COMPRESSION` times shorter. The generator opens with a night-time announcement and a like storm.
Done means nothing is left anywhere: every source record and every deferred message committed, and every
message the rules made delivered, dropped by a policy (counted), or carried by a digest that was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from glob import glob
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bridge.demo.generator import TOPICS, CampusEventGenerator, Generated
from bridge.devstack import REPO_ROOT, BridgeProc, LocalStack, free_port, http_get
from bridge.kafka.client_options import connection_options
from bridge.models import Mapped, RecordMeta
from bridge.rules import RuleSet
from bridge.settings import Settings, load_settings

PARTITIONS = 3
NIGHT_SECONDS = 30  # the demo's campus night: from its start until this long after the rules are written
TIME_COMPRESSION = 30  # the demo's limit, dedupe and digest windows are this many times shorter
SIM_FAULTS = ["--latency-ms", "5", "--latency-jitter-ms", "20", "--isp-error-rate", "0.02", "--http-503-rate", "0.01"]


@dataclass
class Expected:
    """What the bridge should do with what was produced so far."""

    messages: int = 0
    dead_letters: int = 0
    stale: int = 0
    produced: int = 0


def expect(gen: Generated, rules: RuleSet, exp: Expected) -> None:
    """Account for one generated record using the same rules the bridge runs."""
    exp.produced += 1
    if gen.kind == "malformed":
        exp.dead_letters += 1
        return
    result = rules.map(orjson.loads(gen.value), RecordMeta(gen.topic, 0, exp.produced, int(time.time() * 1000)))
    if gen.kind == "stale":
        exp.stale += len(result.items)
        return
    for item in result.items:
        if isinstance(item, Mapped):
            exp.messages += 1
        else:
            exp.dead_letters += 1


SIM_URL_ENV = "SIM_GATEWAY_URL"  # config/demo.yaml's gateway.url variable


def sends_only_to_the_simulator(config: Path) -> str | None:
    """None if the config's gateway.url is `${SIM_GATEWAY_URL…}` (so the demo sends only to the simulator it
    starts); otherwise the reason, for the user."""
    probe = "http://127.0.0.1:1/demo-probe/router/rest"
    url = load_settings(config, env={**os.environ, SIM_URL_ENV: probe}).gateway.url
    if url == probe:
        return None
    return (
        f"{config}: gateway.url does not come from ${{{SIM_URL_ENV}}}: the demo sends only to the simulator it "
        "starts; use config/demo.yaml (or a copy of it)"
    )


def _sum(metrics: dict[str, float], name: str, *contains: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name + "{") and all(c in k for c in contains))


def demo_clock_rule(rule: Any, now: float) -> Any:
    """A copy of a raw rule with its policies on the demo's clock (see the module docstring)."""
    if not isinstance(rule, dict):
        return rule
    out = copy.deepcopy(rule)
    quiet = out.get("quiet_hours")
    if isinstance(quiet, dict) and isinstance(quiet.get("timezone"), str):
        local = datetime.fromtimestamp(now, ZoneInfo(quiet["timezone"]))
        quiet["from"] = (local - timedelta(seconds=1)).strftime("%H:%M:%S")
        quiet["to"] = (local + timedelta(seconds=NIGHT_SECONDS)).strftime("%H:%M:%S")
    for key, field in (("limit", "per_seconds"), ("dedupe", "window_seconds"), ("digest", "window_seconds")):
        block = out.get(key)
        if isinstance(block, dict) and isinstance(block.get(field), int | float):
            block[field] = max(1.0, block[field] / TIME_COMPRESSION)
    return out


def demo_clock_config(config: Path, settings: Settings, workdir: Path, now: float) -> Path:
    """A copy of `config` (in `workdir`) whose rules (inline and every rule file) run on the demo's clock."""
    rules_dir = workdir / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    for old in rules_dir.glob("*.yaml"):
        old.unlink()
    for index, pattern in enumerate(settings.rules.rule_files):
        full = Path(pattern) if Path(pattern).is_absolute() else settings.base_dir / pattern
        for n, path in enumerate(sorted(glob(str(full), recursive=True))):
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            data["rules"] = [demo_clock_rule(r, now) for r in data.get("rules") or []]
            target = rules_dir / f"{index:02d}-{n:03d}-{Path(path).name}"
            target.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    section = raw.get("rules")
    if isinstance(section, list):
        section = {"inline": section}
    section = dict(section or {})
    section["inline"] = [demo_clock_rule(r, now) for r in section.get("inline") or []]
    section["rule_files"] = [str(rules_dir / "*.yaml")]
    raw["rules"] = section
    out = workdir / config.name
    out.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


class Demo:
    """Owns the stack for one demo run."""

    def __init__(self, config: Path, settings: Settings, rules: RuleSet, workdir: Path) -> None:
        self.config = config
        self.settings = settings
        self.rules = rules
        self.stack = LocalStack(workdir)
        self.bridge: BridgeProc | None = None
        self.expected = Expected()
        self.group = ""

    def log(self, text: str) -> None:
        """Progress to stderr."""
        print(text, file=sys.stderr, flush=True)

    async def start(self) -> None:
        """Broker, topics, simulator and the bridge, ready to consume."""
        self.log("starting the local Kafka broker (first run fetches the jars with Maven) …")
        bootstrap = await asyncio.to_thread(self.stack.start_broker)
        self.log(f"  broker at {bootstrap}")
        g = self.settings.gateway
        sim_url = await asyncio.to_thread(self.stack.start_sim, g.app_key, g.secret(), SIM_FAULTS)
        self.log(f"  simulated gateway at {sim_url}")
        await self._create_topics(bootstrap)
        metrics_port = 9464 if _port_free(9464) else free_port()
        self.group = f"campus-bridge-demo-{uuid.uuid4().hex[:8]}"
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, SIM_URL_ENV: sim_url, "BRIDGE_GROUP_ID": self.group}
        now = time.time()
        config = demo_clock_config(self.config, self.settings, self.stack.workdir, now)
        night_ends = datetime.fromtimestamp(now + NIGHT_SECONDS).strftime("%H:%M:%S")
        self.log(
            f"  demo clock: the campus night lasts until {night_ends} (quiet hours moved to now); limit, dedupe and"
            f" digest windows are {TIME_COMPRESSION}x shorter (copies of the rules in {self.stack.workdir}/rules)"
        )
        self.bridge = self.stack.start_bridge(config, env=env, metrics_port=metrics_port)
        await asyncio.to_thread(self.stack.wait_bridge, self.bridge, PARTITIONS * len(TOPICS), 90.0)
        self.log(f"  bridge running: metrics {self.bridge.metrics_url}/metrics  ready {self.bridge.metrics_url}/readyz")
        self.log(f"  delivered messages: {sim_url.replace('/router/rest', '/_sim/messages')}")
        self.log(f"  logs: {self.stack.workdir}/bridge.log, gateway-sim.log")

    async def _create_topics(self, bootstrap: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [*TOPICS, self.settings.kafka.dead_letter_topic]
            if self.settings.kafka.deferred_topic:
                names.append(self.settings.kafka.deferred_topic)
            for name in names:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
        finally:
            await admin.close()

    async def feed(self, events: int | None, rate: float, gen: CampusEventGenerator, stop: asyncio.Event) -> None:
        """Produce `events` records (or forever) at `rate` per second, accounting for each."""
        assert self.stack.bootstrap is not None
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap, linger_ms=5)
        await producer.start()
        try:
            await produce(producer, gen, events=events, rate=rate, stop=stop, on_record=self._expect)
        finally:
            await producer.stop()

    def _expect(self, g: Generated) -> None:
        expect(g, self.rules, self.expected)

    def snapshot(self) -> dict[str, float]:
        """Bridge counters now."""
        assert self.bridge is not None
        m = self.bridge.metrics()
        sim = self.stack.sim_url or ""
        status, body = http_get(sim.replace("/router/rest", "/_sim/stats"))
        accepted = orjson.loads(body).get("accepted", 0) if status == 200 else 0
        return {
            "consumed": _sum(m, "bridge_records_consumed_total") - _deferred(m, self.settings),
            "delivered": _sum(m, "bridge_messages_total", 'outcome="delivered"'),
            "retried": m.get("bridge_retries_total", 0.0),
            "dead_lettered": m.get("bridge_dead_letters_total", 0.0),
            "stale": _sum(m, "bridge_messages_total", 'outcome="skipped_stale"'),
            "dropped": _sum(m, "bridge_messages_total", 'outcome="dropped_by_policy"'),
            "held": m.get("bridge_deferred_waiting_messages", 0.0),
            "folded": _sum(m, "bridge_policy_total", 'policy="digest"', 'action="fold"'),
            "digests": _sum(m, "bridge_policy_total", 'policy="digest"', 'action="summary"')
            + _sum(m, "bridge_policy_total", 'policy="digest"', 'action="single"'),
            "lag": m.get("bridge_consumer_lag_messages", 0.0),
            "accepted": float(accepted),
        }

    def expected_deliveries(self, s: dict[str, float]) -> int:
        """Messages the gateway should get: every one the rules made, less those a policy dropped, with the
        ones folded into digests counted as the digests sent."""
        return int(self.expected.messages - s["dropped"] - s["folded"] + s["digests"])

    def done(self, s: dict[str, float]) -> bool:
        """Everything expected was delivered (directly, deferred or in a digest), dropped, dead-lettered or skipped."""
        e = self.expected
        return (
            s["accepted"] >= self.expected_deliveries(s)
            and s["dead_lettered"] >= e.dead_letters
            and s["stale"] >= e.stale
            and s["held"] == 0
        )

    async def nothing_left(self) -> bool:
        """The bridge committed every source record, and every deferred message (its own group) to the end."""
        k = self.settings.kafka
        groups = [(self.group, list(TOPICS))]
        if k.deferred_topic:
            groups.append((f"{self.group}.deferred", [k.deferred_topic]))
        assert self.stack.bootstrap is not None
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.bootstrap)
        await admin.start()
        await consumer.start()
        try:
            for group, topics in groups:
                committed = await admin.list_consumer_group_offsets(group)
                parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
                ends = await consumer.end_offsets(parts)
                for tp, end in ends.items():
                    done = committed.get(tp)
                    if end > 0 and (done is None or done.offset < end):
                        return False
            return True
        finally:
            await consumer.stop()
            await admin.close()

    async def report(
        self, stop: asyncio.Event, feeding: asyncio.Task[None], exit_when_done: bool, timeout: float
    ) -> int:
        """Print one line a second; with exit_when_done, return 0 once done (1 on timeout)."""
        last_delivered, last_t = 0.0, time.monotonic()
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            await asyncio.sleep(1.0)
            if self.bridge is not None and not self.bridge.alive():
                self.log(f"bridge exited unexpectedly:\n{self.bridge.log_tail()}")
                return 1
            s = await asyncio.to_thread(self.snapshot)
            now = time.monotonic()
            rate = (s["delivered"] - last_delivered) / max(now - last_t, 1e-6)
            last_delivered, last_t = s["delivered"], now
            e = self.expected
            print(
                f"produced {e.produced:>6}  consumed {s['consumed']:>6.0f}  delivered {s['accepted']:>6.0f}"
                f"/{self.expected_deliveries(s):<6}  held {s['held']:>4.0f}  digested {s['folded']:>3.0f}"
                f"  dropped {s['dropped']:>3.0f}  retried {s['retried']:>4.0f}  dead-lettered"
                f" {s['dead_lettered']:>3.0f}/{e.dead_letters:<3}  stale {s['stale']:>3.0f}  lag {s['lag']:>4.0f}"
                f"  rate {rate:6.1f}/s",
                flush=True,
            )
            if exit_when_done and feeding.done() and self.done(s) and await self.nothing_left():
                self.log(
                    "all expected messages delivered (night-time ones when the night ended, likes over the cap in"
                    " digests), duplicates dropped, malformed records dead-lettered, stale ones skipped"
                )
                return 0
            if exit_when_done and now > deadline:
                self.log(f"timed out after {timeout:.0f}s; expected {e}, saw {s}")
                return 1
        return 0

    def close(self) -> None:
        """Stop everything this demo started."""
        self.log("stopping the bridge, the simulator and the broker …")
        self.stack.close()


async def produce(
    producer: AIOKafkaProducer, gen: CampusEventGenerator, *, events: int | None, rate: float, stop: asyncio.Event,
    on_record: Callable[[Generated], None] | None = None,
) -> int:  # fmt: skip
    """Send `events` generated records (or until `stop`) at `rate` per second; the number sent."""
    start = time.monotonic()
    n = 0
    while not stop.is_set() and (events is None or n < events):
        g = gen.next()
        if on_record is not None:
            on_record(g)
        await producer.send(g.topic, g.value, timestamp_ms=g.timestamp_ms)
        n += 1
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    await producer.flush()
    return n


async def run_producer(settings: Settings, *, events: int | None, rate: float, seed: int) -> int:
    """`bridge demo --produce-only`: feed generated campus events into the config's Kafka until SIGTERM/SIGINT
    (or `events` are sent). Starts nothing else: the topics must exist (docker-compose's kafka-init makes them)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(**connection_options(settings.kafka), linger_ms=5)
    await producer.start()
    try:
        print(f"producing campus events at {rate:g}/s to {', '.join(TOPICS)}", file=sys.stderr, flush=True)
        sent = await produce(producer, CampusEventGenerator(seed), events=events, rate=rate, stop=stop)
        print(f"produced {sent} records", file=sys.stderr, flush=True)
    finally:
        await producer.stop()
    return 0


def _deferred(metrics: dict[str, float], settings: Settings) -> float:
    """Records the bridge consumed from the deferred topic (its own messages coming back when due)."""
    topic = settings.kafka.deferred_topic
    return metrics.get(f'bridge_records_consumed_total{{topic="{topic}"}}', 0.0) if topic else 0.0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def run_demo(
    config: Path, settings: Settings, rules: RuleSet, *, events: int | None, rate: float, exit_when_done: bool,
    timeout: float, seed: int,
) -> int:  # fmt: skip
    """Run the demo until Ctrl-C (or until done with exit_when_done); always clean up."""
    workdir = Path(os.environ.get("BRIDGE_DEMO_DIR", REPO_ROOT / ".run" / "demo"))
    demo = Demo(config, settings, rules, workdir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await demo.start()
        gen = CampusEventGenerator(seed)
        feeding = asyncio.create_task(demo.feed(events, rate, gen, stop))
        code = await demo.report(stop, feeding, exit_when_done, timeout)
        stop.set()
        await feeding
        return code
    finally:
        await asyncio.to_thread(demo.close)
