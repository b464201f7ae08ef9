"""Harness for daemon tests: a real broker, the simulated gateway in-process, `bridge run` as a subprocess.

Every test gets fresh uuid topics, its own consumer group and DLQ topic, a simulator on a free port whose
state (accepted messages by msg_key, stats, faults) the test reads directly, and processes that are stopped
on teardown whatever happened.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import leakguard
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bridge.devstack import BridgeProc, LocalStack, parse_metrics
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults

REPO_ROOT_FOR_TESTS = Path(__file__).resolve().parents[2]
APP_KEY = "test-app"
APP_SECRET = "test-secret"

# One message per event: to `event.to`, carrying the event id, sequence and Kafka coordinates.
NOTE_RULE: dict[str, Any] = {
    "id": "note",
    "when": "event.kind == 'note'",
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ event.to }}",
        "source": "campus-test",
        "action": "note",
        "resource_id": "{{ event.id }}",
        "resource_url": "https://campus.example/notes/{{ event.id }}",
        "json_data": {
            "id": "{{ event.id }}",
            "seq": "{{ event.seq }}",
            "p": "{{ kafka.partition }}",
            "o": "{{ kafka.offset }}",
        },
    },
}


def note(i: int, to: str = "13800000000", **more: Any) -> dict[str, Any]:
    """An event the NOTE_RULE maps to exactly one message."""
    return {"kind": "note", "id": f"n{i}", "seq": i, "to": to, **more}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base` (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


async def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `cond` (sync or async) until truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(interval)


class Harness:
    """One test's world. Use `await h.start_sim()`, `h.config()`, `await h.start_bridge(cfg)`, `await h.produce()`."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.stack = LocalStack(workdir)
        self.stack.bootstrap = bootstrap
        self.topic = ""
        self.partitions = 0
        self.group = f"grp-{uuid.uuid4().hex[:12]}"
        self.dlq_topic = f"dlq-{uuid.uuid4().hex}"
        self.sim: SimGateway | None = None
        self._http: aiohttp.ClientSession | None = None
        self._producer: AIOKafkaProducer | None = None

    # -------------------------------------------------------------- parts
    async def start_sim(self, faults: Faults | None = None) -> SimGateway:
        """The simulated gateway, in this test's event loop."""
        self.sim = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET, faults=faults)
        await self.sim.start()
        return self.sim

    def config(self, name: str = "bridge", secret: str = APP_SECRET, **over: Any) -> Path:
        """Write a bridge config for this test (deep-merged with `over`)."""
        assert self.sim is not None, "start_sim() first"
        base: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "topics": [self.topic],
                "group_id": self.group,
                "auto_offset_reset": "earliest",
                "dead_letter_topic": self.dlq_topic,
                "commit_interval_seconds": 0.2,
                "session_timeout_ms": 10000,
                "heartbeat_interval_ms": 1000,
            },
            "gateway": {
                "url": self.sim.url,
                "app_key": APP_KEY,
                "app_secret": secret,
                "sign_method": "hmac-sha256",
                "timeout_seconds": 2,
            },
            "delivery": {
                "max_in_flight": 32,
                "rate_limit": {"per_second": 0, "burst": 10},
                "retry": {"max_attempts": 8, "initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.5},
                "pause": {"initial_probe_seconds": 0.2, "max_probe_seconds": 1},
                "shutdown_timeout_seconds": 10,
            },
            "rules": {"inline": [NOTE_RULE]},
            "logging": {"format": "json", "level": "INFO"},
        }
        return self.stack.write_config(name, deep_merge(base, over))

    async def start_bridge(self, config: Path, name: str = "bridge", *, wait_ready: bool = True) -> BridgeProc:
        """`bridge run` as a subprocess; by default wait until it is ready and holds partitions."""
        proc = self.stack.start_bridge(config, name=name)
        if wait_ready:
            await self.wait_ready(proc)
        return proc

    async def wait_ready(self, proc: BridgeProc, timeout: float = 60.0, partitions: int = 1) -> None:
        """Until /readyz is 200 and the process holds at least `partitions` partitions."""

        async def ok() -> bool:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")
            status, _ = await self.get(f"{proc.metrics_url}/readyz")
            if status != 200:
                return False
            return (await self.metrics(proc)).get("bridge_assigned_partitions", 0) >= partitions

        await wait_until(ok, timeout, f"{proc.name} ready")

    async def get(self, url: str) -> tuple[int, bytes]:
        """HTTP GET (status 0 when unreachable)."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return 0, b""

    async def metrics(self, proc: BridgeProc) -> dict[str, float]:
        """The process's metrics now ({} when unreachable)."""
        status, body = await self.get(f"{proc.metrics_url}/metrics")
        return parse_metrics(body.decode()) if status == 200 else {}

    # -------------------------------------------------------------- Kafka
    async def producer(self) -> AIOKafkaProducer:
        """A producer for test input (large requests allowed)."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, max_request_size=4 * 1024 * 1024, linger_ms=2
            )
            await self._producer.start()
        return self._producer

    async def produce(
        self,
        values: list[Any],
        *,
        partition: int | None = None,
        key: Callable[[Any], bytes | None] | None = None,
        timestamp_ms: int | None = None,
        topic: str | None = None,
    ) -> None:
        """Produce events (dicts are JSON-encoded, bytes sent as they are), in order, and flush."""
        p = await self.producer()
        futures = []
        for v in values:
            raw = v if isinstance(v, bytes) else orjson.dumps(v)
            k = key(v) if key is not None else None
            futures.append(
                await p.send(topic or self.topic, raw, key=k, partition=partition, timestamp_ms=timestamp_ms)
            )
        await asyncio.gather(*futures)

    async def end_offsets(self) -> dict[int, int]:
        """Log-end offset of each partition of the test topic."""
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await c.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            ends = await c.end_offsets(tps)
            return {tp.partition: off for tp, off in ends.items()}
        finally:
            await c.stop()

    async def committed(self) -> dict[int, int]:
        """The group's committed offsets on the test topic (-1 when none)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group)
        finally:
            await admin.close()
        out = dict.fromkeys(range(self.partitions), -1)
        for tp, meta in offsets.items():
            if tp.topic == self.topic:
                out[tp.partition] = meta.offset
        return out

    async def wait_committed_to_end(self, timeout: float = 30.0) -> None:
        """Until the group has committed every partition up to its end."""
        ends = {p: end for p, end in (await self.end_offsets()).items() if end > 0}

        async def done() -> bool:
            committed = await self.committed()
            return all(committed[p] == end for p, end in ends.items())

        await wait_until(done, timeout, f"group {self.group} committed to {ends}", interval=0.2)

    async def read_dlq(self, expected: int, timeout: float = 30.0) -> list[Any]:
        """Read the test's DLQ topic until `expected` records were seen (fails on timeout)."""
        c = AIOKafkaConsumer(
            self.dlq_topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await c.start()
        records: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while len(records) < expected:
                if time.monotonic() > deadline:
                    raise AssertionError(f"DLQ had {len(records)} records, expected {expected}")
                batch = await c.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)
            # anything beyond `expected` that is already there is returned too
            batch = await c.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        finally:
            await c.stop()
        for rec in records:  # what the bridge wrote into the DLQ is searched for test secrets too
            for name, value in rec.headers:
                if name.startswith("bridge."):
                    leakguard.record(f"dead-letter header {name}", value)
        return records

    # -------------------------------------------------------------- simulator view
    def accepted(self) -> dict[str, dict[str, Any]]:
        """Accepted messages by event id: {'n1': {'msg_key', 'count', 'first', 'mobile', 'seq', 'p', 'o'}}."""
        assert self.sim is not None
        out: dict[str, dict[str, Any]] = {}
        for rec in self.sim.state.messages.values():
            data = orjson.loads(rec.message["json_data"])
            out[data["id"]] = {
                "msg_key": rec.msg_key,
                "count": rec.count,
                "first": rec.first_received,
                "mobile": rec.message.get("mobile_receiver"),
                "seq": data["seq"],
                "p": data["p"],
                "o": data["o"],
            }
        return out

    async def wait_accepted(self, ids: set[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Until the simulator accepted a message for every id."""

        def done() -> bool:
            return ids <= self.accepted().keys()

        try:
            await wait_until(done, timeout, f"{len(ids)} messages accepted")
        except AssertionError as exc:
            missing = sorted(ids - self.accepted().keys())[:10]
            logs = "\n".join(p.log_tail(15) for p in self.stack.procs)
            raise AssertionError(f"{exc}; missing e.g. {missing}\n{logs}") from None
        return self.accepted()

    async def close(self) -> None:
        """Stop everything (processes first, then clients and the simulator)."""
        await asyncio.to_thread(self.stack.close)
        if self._producer is not None:
            await self._producer.stop()
        if self._http is not None:
            await self._http.close()
        if self.sim is not None:
            await self.sim.stop()
