"""The shipped dashboard and alerts against a real Prometheus scraping real bridges (issue 6, "Proven for real").

One bridge delivers live traffic from the session broker to the simulated gateway (with bad records and a
refused recipient mixed in); a Prometheus built from the shipped prometheus.yml and alerts.yml scrapes it every
second. Every dashboard query and every alert expression must be valid PromQL against the real series, and the
core panels must show data. Then a second bridge with a wrong app secret pauses on the gateway's systemic
error: its /readyz turns 503 and CampusBridgeNotReady becomes pending in Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from obs_support import ALERTS, PROMETHEUS_YML, alert_rule, load_alert_rules, load_dashboard, panel_queries, substitute

from bridge.devstack import BridgeProc, LocalStack, free_port, http_get

APP_KEY, APP_SECRET = "obs-app", "obs-secret"
REJECTED_PREFIX = "1990"  # the simulator refuses these recipients permanently (code 50, isv.*)
LIVE_VARIABLES = {"job": "campus-bridge", "instance": ".*"}

# Panels that must show data while events flow (by title), and whether every value must also be > 0.
CORE_PANELS = {
    "Records consumed /s by topic": True,
    "Messages delivered /s by rule": True,
    "Messages by outcome /s": True,
    "Gateway requests /s by verdict": True,
    "Gateway errors /s by verdict and code": True,
    "Gateway request duration p50/p95/p99": True,
    "Event-to-delivery latency p50/p95/p99": True,
    "Consumer lag (messages) by partition": False,
    "Oldest unfinished record age by partition": False,
    "Dead letters by reason": True,
    "Rate-limit utilisation": True,
}

VARIABLE_QUERY = re.compile(r"label_values\((?P<selector>.+), (?P<label>\w+)\)")

RULE = {
    "id": "obs_notice",
    "description": "a notice to one student (observability test)",
    "when": "event.type == 'notice'",
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ event.to }}",
        "event_time_millis": "{{ event.ts }}",
        "source": "campus",
        "action": "notice",
        "resource_id": "{{ event.id }}",
        "resource_url": "https://campus.example/notices/{{ event.id }}",
        "json_data": {"title": "{{ event.title }}"},
    },
}

T = TypeVar("T")


async def eventually(probe: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and the last value) at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(every)


@dataclass
class Prometheus:
    """A Prometheus server started for the test."""

    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, config: dict[str, Any]) -> Prometheus:
        """Write `config`, start Prometheus on a free loopback port with its TSDB in `workdir`."""
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: run scripts/install-test-deps"
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(popen, f"http://127.0.0.1:{port}", log_path)

    def ready(self) -> bool:
        """/-/ready answers 200 (fails the test if the process died)."""
        if self.popen.poll() is not None:
            pytest.fail(f"prometheus exited {self.popen.returncode}:\n{self.log_path.read_text()[-3000:]}")
        return http_get(f"{self.url}/-/ready")[0] == 200

    def query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer for `expr` (instant, now), as parsed JSON."""
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10)
        try:
            answer: dict[str, Any] = json.loads(body)
        except ValueError:
            answer = {"status": "error", "error": f"HTTP {status}: {body[:200]!r}"}
        return answer

    def series(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of a query that must succeed."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's `label_values(match, label)` variable query asks Prometheus."""
        params = urllib.parse.urlencode({"match[]": match})
        status, body = http_get(f"{self.url}/api/v1/label/{label}/values?{params}", timeout=10)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        values: list[str] = answer["data"]
        return values

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def values_of(result: list[dict[str, Any]]) -> list[float]:
    """The sample values of an instant vector."""
    return [float(item["value"][1]) for item in result]


def prometheus_config(targets: list[str]) -> dict[str, Any]:
    """The shipped prometheus.yml, scraping `targets` every second, rules evaluated every second."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str((PROMETHEUS_YML.parent / f).resolve()) for f in config["rule_files"]]
    assert config["rule_files"] == [str(ALERTS.resolve())]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "campus-bridge"]
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    job["static_configs"] = [{"targets": targets}]
    return config


def bridge_config(
    stack: LocalStack, *, bootstrap: str, topic: str, dlq: str, secret: str, rate: float
) -> dict[str, Any]:
    """A bridge on `topic` with the inline test rule, delivering to the stack's simulator."""
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "group_id": f"obs-{uuid.uuid4().hex}",
            "auto_offset_reset": "earliest",
            "dead_letter_topic": dlq,
            "commit_interval_seconds": 0.5,
        },
        "gateway": {
            "url": stack.sim_url,
            "app_key": APP_KEY,
            "app_secret": secret,
            "sign_method": "hmac-sha256",
            "timeout_seconds": 5,
        },
        "delivery": {
            "rate_limit": {"per_second": rate, "burst": 100},
            "pause": {"initial_probe_seconds": 1, "max_probe_seconds": 2},
            "shutdown_timeout_seconds": 5,
        },
        "rules": {"inline": [RULE]},
        "metrics": {"listen": "${BRIDGE_METRICS_LISTEN}"},
        "logging": {"level": "INFO", "format": "text"},
    }


def notice(i: int, phone: str) -> bytes:
    """One event the test rule maps to a message for `phone`."""
    event = {"type": "notice", "id": f"n{i}", "to": phone, "ts": int(time.time() * 1000), "title": f"notice {i}"}
    return json.dumps(event).encode()


async def produce_traffic(producer: AIOKafkaProducer, topic: str, stop: asyncio.Event) -> None:
    """Live traffic until `stop`: deliverable notices, plus not-JSON records, unrenderable phones, refused
    recipients and unmatched events now and then (so dead letters, mapping errors and rejections exist)."""
    i = 0
    while not stop.is_set():
        i += 1
        key = b"%d" % i
        await producer.send_and_wait(topic, notice(i, f"1380000{i % 10000:04d}"), key=key)
        if i % 4 == 0:
            await producer.send_and_wait(topic, b"this is not json {", key=key)
        if i % 6 == 0:
            await producer.send_and_wait(topic, notice(i, "not-a-phone"), key=key)
        if i % 5 == 0:
            await producer.send_and_wait(topic, notice(i, f"{REJECTED_PREFIX}{i:07d}"), key=key)
        if i % 7 == 0:
            await producer.send_and_wait(topic, json.dumps({"type": "other"}).encode(), key=key)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def start_bridge(stack: LocalStack, name: str, config: dict[str, Any], port: int, partitions: int) -> BridgeProc:
    """Start a bridge and wait (off the event loop) until it is ready with its partitions."""
    proc = stack.start_bridge(stack.write_config(name, config), name=name, metrics_port=port)
    await asyncio.to_thread(stack.wait_bridge, proc, partitions, 60.0)
    return proc


@pytest.mark.timeout(180)
async def test_dashboard_and_alerts_on_a_real_prometheus(
    kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    topic = await new_topic(2, prefix="obs")
    bad_topic = await new_topic(1, prefix="obs-bad")
    dlq = await new_topic(1, prefix="obs-dlq")
    good_port = free_port()
    bad_port = free_port()
    while bad_port == good_port:
        bad_port = free_port()
    good_target, bad_target = f"127.0.0.1:{good_port}", f"127.0.0.1:{bad_port}"

    stack = LocalStack(tmp_path / "stack")
    stack.bootstrap = kafka_bootstrap  # the session broker; the stack starts no broker of its own
    prometheus: Prometheus | None = None
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    stop_traffic = asyncio.Event()
    traffic: asyncio.Task[None] | None = None
    producer_started = False
    try:
        stack.start_sim(APP_KEY, APP_SECRET, ["--reject-mobile-prefix", REJECTED_PREFIX])
        prometheus = Prometheus.start(tmp_path / "prometheus", prometheus_config([good_target, bad_target]))
        good = await start_bridge(
            stack,
            "bridge-good",
            bridge_config(stack, bootstrap=kafka_bootstrap, topic=topic, dlq=dlq, secret=APP_SECRET, rate=1000),
            good_port,
            partitions=2,
        )
        prom = prometheus
        await eventually(prom.ready, timeout=30, what="prometheus /-/ready")
        await eventually(
            lambda: prom.series(f'up{{job="campus-bridge", instance="{good_target}"}} == 1'),
            timeout=30,
            what="prometheus scraping the bridge",
        )

        # ---- the dashboard's job and instance variables list this bridge
        for var in load_dashboard()["templating"]["list"]:
            if var["type"] != "query":
                continue
            match = VARIABLE_QUERY.fullmatch(var["query"]["query"])
            assert match, var["query"]
            values = prom.label_values(match["label"], substitute(match["selector"], LIVE_VARIABLES))
            assert {"job": "campus-bridge", "instance": good_target}[var["name"]] in values, var["name"]

        # ---- live traffic; the core panels fill up
        await producer.start()
        producer_started = True
        traffic = asyncio.create_task(produce_traffic(producer, topic, stop_traffic))
        queries = panel_queries(load_dashboard())
        core = [q for q in queries if q.title in CORE_PANELS]
        assert {q.title for q in core} == set(CORE_PANELS), "core panel titles changed"

        def missing_core_data() -> list[str]:
            missing = []
            for q in core:
                values = values_of(prom.series(substitute(q.expr, LIVE_VARIABLES)))
                finite = [v for v in values if math.isfinite(v)]
                if not finite or (CORE_PANELS[q.title] and max(finite) <= 0):
                    missing.append(f"{q.label} -> {values}")
            return missing

        deadline = time.monotonic() + 45
        while missing := missing_core_data():
            if time.monotonic() >= deadline:
                pytest.fail(f"core panels without data after 45 s: {missing}")
            await asyncio.sleep(0.5)

        # ---- every dashboard query and every alert expression is valid against the real series
        failures = []
        for q in queries:
            answer = prom.query(substitute(q.expr, LIVE_VARIABLES))
            if answer["status"] != "success":
                failures.append(f"{q.label}: {answer.get('error')}")
        for rule in load_alert_rules():
            answer = prom.query(rule["expr"])
            if answer["status"] != "success":
                failures.append(f"{rule['alert']}: {answer.get('error')}")
        assert failures == []

        # Dead letters appeared, so their alert expression holds; the healthy bridge is not "not ready".
        assert prom.series(alert_rule("CampusBridgeDeadLetters")["expr"])
        not_ready_expr = alert_rule("CampusBridgeNotReady")["expr"]
        assert not [s for s in prom.series(not_ready_expr) if s["metric"].get("instance") == good_target]
        stop_traffic.set()
        await traffic

        # ---- a bridge with a wrong secret: ready first, then paused on the first message -> not ready
        bad = await start_bridge(
            stack,
            "bridge-wrong-secret",
            bridge_config(stack, bootstrap=kafka_bootstrap, topic=bad_topic, dlq=dlq, secret="wrong", rate=0),
            bad_port,
            partitions=1,
        )
        await eventually(
            lambda: prom.series(f'bridge_ready{{instance="{bad_target}"}} == 1'),
            timeout=20,
            what="prometheus seeing the second bridge ready",
        )
        await producer.send_and_wait(bad_topic, notice(1, "13900000001"), key=b"1")

        def readyz_paused() -> dict[str, Any] | None:
            status, body = bad.ready()
            if status != 503:
                return None
            detail: dict[str, Any] = json.loads(body)
            return detail if any("pause" in reason for reason in detail.get("reasons", [])) else None

        detail = await eventually(readyz_paused, timeout=30, what="/readyz 503 with a pause reason")
        assert detail["ready"] is False
        assert detail["paused"] == "code_25", "the simulator answers code 25 (invalid signature)"

        def not_ready_in_prometheus() -> list[dict[str, Any]]:
            return [s for s in prom.series(not_ready_expr) if s["metric"].get("instance") == bad_target]

        await eventually(not_ready_in_prometheus, timeout=20, what="the CampusBridgeNotReady expression")
        pending = await eventually(
            lambda: prom.series(
                f'ALERTS{{alertname="CampusBridgeNotReady", alertstate=~"pending|firing", instance="{bad_target}"}}'
            ),
            timeout=20,
            what="CampusBridgeNotReady pending",
        )
        assert pending[0]["metric"]["severity"] == "critical"
        paused = prom.series(alert_rule("CampusBridgePaused")["expr"])
        assert [s["metric"]["reason"] for s in paused if s["metric"].get("instance") == bad_target] == ["code_25"]
        assert not [s for s in prom.series(not_ready_expr) if s["metric"].get("instance") == good_target]
        assert good.alive() and bad.alive()
    finally:
        stop_traffic.set()
        if traffic is not None:
            with contextlib.suppress(Exception):
                await traffic
        if producer_started:
            await producer.stop()
        if prometheus is not None:
            prometheus.stop()
        await asyncio.to_thread(stack.close)


async def ensure_topics(bootstrap: str, names: list[str], written: int = 1) -> int:
    """Create the demo's fixed-name topics if missing (1 partition); the total number of partitions of all but the
    last `written` (the topics the bridge writes: dead letters, deferred messages)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:

        async def counts() -> list[int]:
            await consumer._client.force_metadata_update()
            return [len(consumer.partitions_for_topic(n) or ()) for n in names]

        found = await counts()
        while not all(found):
            await asyncio.sleep(0.2)
            found = await counts()
        return sum(found[:-written])
    finally:
        await consumer.stop()


@pytest.mark.timeout(180)
async def test_a_clean_start_with_the_demo_traffic_fires_no_false_alert(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Issue 12: a bridge started clean exports every counter at 0; no alert may fire on those zeros. The demo's
    own traffic (`bridge demo --produce-only`, what docker-compose's demo-events service runs) then flows: the only
    alert allowed is CampusBridgeDeadLetters, for exactly the reasons that really got letters (the demo sends a
    few malformed records on purpose)."""
    from bridge.demo.generator import TOPICS

    partitions = await ensure_topics(kafka_bootstrap, [*TOPICS, "campus-bridge.dlq", "campus-bridge.deferred"], 2)
    stack = LocalStack(tmp_path / "stack")
    stack.bootstrap = kafka_bootstrap
    prometheus: Prometheus | None = None
    port = free_port()
    target = f"127.0.0.1:{port}"
    try:
        sim_url = stack.start_sim("campus-demo", "local-simulator-secret")
        prometheus = Prometheus.start(tmp_path / "prometheus", prometheus_config([target]))
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SIM_GATEWAY_URL": sim_url,
            "BRIDGE_GROUP_ID": f"obs-demo-{uuid.uuid4().hex}",
        }
        bridge = stack.start_bridge(Path("config/demo.yaml"), name="bridge-demo", env=env, metrics_port=port)
        await asyncio.to_thread(stack.wait_bridge, bridge, partitions, 60.0)
        prom = prometheus
        await eventually(prom.ready, timeout=30, what="prometheus /-/ready")
        await eventually(lambda: prom.series(f'bridge_ready{{instance="{target}"}} == 1'), timeout=30,
                         what="prometheus scraping the ready bridge")  # fmt: skip

        def active_alerts() -> list[dict[str, str]]:
            expr = f'ALERTS{{alertstate=~"pending|firing", instance="{target}"}}'
            return [s["metric"] for s in prom.series(expr)]

        # ---- fresh start, nothing consumed yet: every dead-letter reason is exported at 0 and nothing is active
        zeros = prom.series(f'bridge_dead_letters_total{{instance="{target}"}} == 0')
        assert len(zeros) == 11, "all eleven reasons are primed at 0"
        for _ in range(5):  # five rule evaluations (every second)
            assert active_alerts() == []
            await asyncio.sleep(1.0)

        # ---- the demo's traffic, produced by the compose service's command
        argv = ["demo", "--produce-only", "-c", "config/demo.yaml", "--events", "120", "--rate", "60"]
        feeder = stack.spawn(
            "demo-events", [stack.python, "-m", "bridge", *argv], env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        )
        await asyncio.to_thread(feeder.popen.wait, 60)
        assert feeder.popen.returncode == 0, feeder.log_tail()
        assert "produced 120 records" in feeder.log_path.read_text()
        await eventually(
            lambda: prom.series(f'sum(bridge_messages_total{{instance="{target}", outcome="delivered"}}) > 50'),
            timeout=30,
            what="the demo's messages delivered",
        )
        await eventually(
            lambda: prom.series(f'sum(bridge_consumer_lag_messages{{instance="{target}"}}) == 0'),
            timeout=30,
            what="the bridge caught up",
        )

        def dead_letter_alerts_match_the_letters() -> bool:
            active = active_alerts()  # read before the counters: an alert can only follow a letter
            lettered = {
                m["metric"]["reason"] for m in prom.series(f'bridge_dead_letters_total{{instance="{target}"}} > 0')
            }
            assert {a["alertname"] for a in active} <= {"CampusBridgeDeadLetters"}, active
            assert {a["reason"] for a in active} <= lettered, (active, lettered)
            assert all(a["alertstate"] == "pending" for a in active), "nothing has fired (for: 1m)"
            return bool(lettered) and {a["reason"] for a in active} == lettered

        await eventually(dead_letter_alerts_match_the_letters, timeout=20, what="dead-letter alerts for the letters")
        for _ in range(3):  # and no other alert, nor one without a letter, appears later (a late letter may still
            dead_letter_alerts_match_the_letters()  # be waiting for its own alert: only the invariants are asserted)
            await asyncio.sleep(1.0)
        assert bridge.alive()
    finally:
        if prometheus is not None:
            prometheus.stop()
        await asyncio.to_thread(stack.close)
