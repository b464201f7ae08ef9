"""Shared machinery of the benchmark scenarios: broker, simulator, bridge configs, load, /proc sampling, results.

A scenario builds a `World` (its own LocalStack work dir, a fresh uuid topic, consumer group and DLQ topic,
a simulator process), pre-produces or paces events into the topic with `produce_backlog` / `produce_paced`,
starts `bridge run` processes from a generated config, and measures them from the outside: CPU from
/proc/<pid>/stat (utime+stime), RSS from /proc/<pid>/status, deliveries from the simulator's control API.
Every process a World starts is stopped by `World.close()` (always called in a `finally`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.devstack import BridgeProc, LocalStack, free_port, http_get

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
APP_KEY = "bench-app"
APP_SECRET = "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The simulator runs with its cyclic GC off (bench/simproc.py) unless BENCH_SIM_GC=1.
SIM_GC = os.environ.get("BENCH_SIM_GC", "") not in ("", "0")
# The fast Go stand-in for the gateway (bench/standin/main.go), built on first use into this git-ignored cache.
STANDIN_SRC = ROOT / "bench" / "standin"
CACHE_DIR = ROOT / ".cache" / "bench"
Gateway = Literal["sim", "standin"]
RECIPIENTS = 10_000  # distinct phone numbers the events cycle through (per-recipient ordering stays parallel)

# The benchmark's rule: one message per event, to `event.to`, like the daemon tests' NOTE_RULE. It renders
# eight template fields (two of them from the Kafka coordinates); `event_time_millis` is left to its default,
# the record's Kafka timestamp, which is what the latency scenario measures from.
BENCH_RULE: dict[str, Any] = {
    "id": "note",
    "when": "event.kind == 'note'",
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ event.to }}",
        "source": "campus-bench",
        "action": "note",
        "resource_id": "{{ event.id }}",
        "resource_url": "https://campus.example/notes/{{ event.id }}",
        "json_data": {
            "id": "{{ event.id }}",
            "seq": "{{ event.seq }}",
            "title": "{{ event.title }}",
            "p": "{{ kafka.partition }}",
            "o": "{{ kafka.offset }}",
        },
    },
}
_TITLE = "Room change: CS101 lecture moves to building A, room 204, from next Monday"


def event_bytes(i: int) -> bytes:
    """Event number `i` as the JSON the producers write (~200 bytes)."""
    return orjson.dumps(
        {"kind": "note", "id": f"n{i}", "seq": i, "to": f"138{i % RECIPIENTS:08d}", "title": _TITLE, "v": 1}
    )


def go_build(src: Path, name: str) -> Path:
    """`go build` the Go program in `src` into CACHE_DIR, named by a hash of its sources (so it is rebuilt
    when they change); its path. The stand-in needs only the standard library, so it builds offline."""
    digest = hashlib.sha256()
    for f in sorted(src.rglob("*")):
        if f.is_file() and (f.suffix == ".go" or f.name in ("go.mod", "go.sum")):
            digest.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
    binary = CACHE_DIR / f"{name}-{digest.hexdigest()[:12]}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"building {src} needs the Go toolchain (`go` on PATH)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log(f"building {src.relative_to(ROOT)} -> {binary.relative_to(ROOT)}")
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")  # two builds at once must not collide
    done = subprocess.run(
        [go, "build", "-trimpath", "-buildvcs=false", "-o", str(tmp), "."],
        cwd=src, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"go build in {src} failed:\n{done.stderr[-3000:]}")
    tmp.replace(binary)
    return binary


def standin_binary() -> Path:
    """The stand-in gateway's binary (built if its source changed)."""
    return go_build(STANDIN_SRC, "standin")


# ---------------------------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of a process, in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def system_cpu() -> tuple[float, float, float]:
    """Machine-wide (busy, steal, total) CPU seconds since boot, from the first line of /proc/stat."""
    with open("/proc/stat", "rb") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (parts + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, steal / CLK_TCK, (busy + idle + iowait + steal) / CLK_TCK


def machine() -> dict[str, Any]:
    """The machine description stored with the results."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions: dict[str, str] = {}
    for dist in ("aiokafka", "uvloop", "aiohttp", "orjson", "prometheus_client", "yarl"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "missing"
    try:
        from aiokafka.record import _crecords  # noqa: F401

        cext = True
    except ImportError:
        cext = False
    load1, load5, _ = os.getloadavg()
    # A one-line CPU speed reference for comparing machines: best of 5 × 2,000 `sum(range(1000))`.
    ref = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        **versions,
        "aiokafka_c_extension": cext,
        "cpu_reference_sum_range_1000_us": round(ref, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_at_start": [round(load1, 2), round(load5, 2)],
    }


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Row:
    """One figure of the results table."""

    scenario: str
    figure: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None  # None: informational, no target

    def shown(self) -> str:
        """The value formatted for the table."""
        if self.value is None:
            return "n/a"
        v = self.value
        if abs(v) >= 100 or float(v).is_integer():
            return f"{v:,.0f} {self.unit}".strip()
        return f"{v:,.2f} {self.unit}".strip()


@dataclass
class ScenarioResult:
    """What one scenario reports: table rows and the raw details (every run) for the JSON."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def row(self, figure: str, value: float | None, unit: str, target: str = "", passed: bool | None = None) -> Row:
        """Add and return a row."""
        r = Row(self.name, figure, value, unit, target, passed)
        self.rows.append(r)
        return r

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "rows": [asdict(r) for r in self.rows], "details": self.details, "error": self.error}


def median(values: Sequence[float]) -> float:
    """Median (of a non-empty sequence)."""
    return float(statistics.median(values))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile q (0..100) of an ascending sequence."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- broker
@contextlib.contextmanager
def broker() -> Iterator[str]:
    """$KAFKA_BOOTSTRAP_SERVERS, or a clean local broker for the duration (exported so Worlds share it)."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    stack = LocalStack(workdir)
    try:
        log("starting a local Kafka broker (scripts/kafka-local)")
        address = stack.start_broker()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = address
        yield address
    finally:
        os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        stack.close()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"retention.ms": "3600000"})])
    finally:
        await admin.close()
    # wait for the leaders, so the first produce does not race the topic's creation
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        for _ in range(100):
            parts = probe.partitions_for_topic(name)
            if parts and len(parts) == partitions:
                return
            await probe._client.force_metadata_update()
            await asyncio.sleep(0.1)
    finally:
        await probe.stop()


async def _producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=512 * 1024, acks=1)
    await p.start()
    return p


async def _produce_backlog(bootstrap: str, topic: str, partitions: int, start: int, count: int) -> None:
    producer = await _producer(bootstrap)
    try:
        pending: list[asyncio.Future[Any]] = []
        for p in range(partitions):
            batch = producer.create_batch()
            for i in range(start + p, start + count, partitions):
                value = event_bytes(i)
                if batch.append(key=None, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=None, value=value, timestamp=None)
                if len(pending) >= 32:
                    await asyncio.gather(*pending)
                    pending.clear()
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def produce_backlog(bootstrap: str, topic: str, partitions: int, count: int, start: int = 0) -> float:
    """Write events start..start+count-1 round-robin over the partitions (event i → partition i % n); seconds."""
    t = time.monotonic()
    asyncio.run(_produce_backlog(bootstrap, topic, partitions, start, count))
    return time.monotonic() - t


async def _produce_paced(
    bootstrap: str, topic: str, partitions: int, *, rate: float, seconds: float, start: int
) -> tuple[int, float]:
    producer = await _producer(bootstrap, linger_ms=0)
    try:
        tick = 0.005
        sent = 0
        t0 = time.monotonic()
        futures: list[asyncio.Future[Any]] = []
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= seconds:
                break
            due = min(int(elapsed * rate) + 1, int(seconds * rate))
            while sent < due:
                i = start + sent
                ts = time.time_ns() // 1_000_000
                futures.append(await producer.send(topic, event_bytes(i), partition=i % partitions, timestamp_ms=ts))
                sent += 1
            if len(futures) > 2000:
                await asyncio.gather(*futures)
                futures.clear()
            await asyncio.sleep(tick)
        await asyncio.gather(*futures)
        return sent, time.monotonic() - t0
    finally:
        await producer.stop()


def produce_paced(
    bootstrap: str, topic: str, partitions: int, *, rate: float, seconds: float, start: int = 0
) -> tuple[int, float]:
    """Produce `rate` events/s for `seconds`, each stamped with its send time; (events sent, seconds taken)."""
    return asyncio.run(_produce_paced(bootstrap, topic, partitions, rate=rate, seconds=seconds, start=start))


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: (meta.offset, meta.metadata) for tp, meta in offsets.items() if tp.topic == topic}


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on the topic."""
    return {p: offset for p, (offset, _) in committed_with_metadata(bootstrap, group, topic).items()}


def committed_with_metadata(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, str]]:
    """The group's committed (offset, commit metadata) per partition of the topic."""
    return asyncio.run(_committed(bootstrap, group, topic))


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        ends = await c.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await c.stop()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The log-end offset of each partition."""
    return asyncio.run(_end_offsets(bootstrap, topic, partitions))


# ---------------------------------------------------------------------------------------------- the world
class World:
    """One scenario run: its processes (simulator, bridges), topic, group and DLQ topic; `close()` stops all."""

    def __init__(
        self,
        name: str,
        *,
        partitions: int = 4,
        sim_args: Sequence[str] = (),
        sim_gc: bool | None = None,
        gateway: Gateway = "sim",
    ) -> None:
        self.name = name
        self.gateway = gateway
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.stack = LocalStack(self.workdir)
        self.bridges: list[BridgeProc] = []
        self.partitions = partitions
        tag = uuid.uuid4().hex[:10]
        self.topic = f"bench-{name}-{tag}"
        self.group = f"bench-{name}-{tag}"
        self.dlq = f"bench-{name}-{tag}.dlq"
        try:
            self.bootstrap = self.stack.start_broker()  # the shared broker (exported by `broker()`)
            asyncio.run(_create_topic(self.bootstrap, self.topic, partitions))
            self.sim_url = self._start_sim(list(sim_args), SIM_GC if sim_gc is None else sim_gc, gateway)
        except BaseException:
            self.stack.close()
            raise
        self.sim_base = self.sim_url.rsplit("/router/rest", 1)[0]
        assert self.stack.sim is not None
        self.sim_pid = self.stack.sim.popen.pid

    def _start_sim(self, extra: list[str], gc_on: bool, gateway: Gateway = "sim", timeout: float = 30.0) -> str:
        """The gateway on a free port; its URL. `sim`: `python -m bench.simproc` (the project's simulator, GC off
        unless `gc_on`); `standin`: the Go stand-in (bench/standin), same control API, far less CPU."""
        port = free_port()
        common = ["--listen", f"127.0.0.1:{port}", "--app-key", APP_KEY, "--app-secret", APP_SECRET, *extra]
        if gateway == "standin":
            argv = [str(standin_binary()), *common]
        else:
            argv = [sys.executable, "-m", "bench.simproc", *(["--gc"] if gc_on else []), *common]
        proc = self.stack.spawn("gateway-sim", argv, env={"PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"gateway-sim exited:\n{proc.log_tail()}")
            if "listening" in proc.log_path.read_text(errors="replace"):
                self.stack.sim = proc
                self.stack.sim_url = f"http://127.0.0.1:{port}/router/rest"
                return self.stack.sim_url
            time.sleep(0.05)
        raise RuntimeError(f"gateway-sim did not start within {timeout}s:\n{proc.log_tail()}")

    def __enter__(self) -> World:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(keep_files=exc_type is not None)

    def close(self, *, keep_files: bool = False) -> None:
        """Stop every process this world started; remove its work dir unless something failed."""
        self.stack.close()
        if keep_files or os.environ.get("BENCH_KEEP"):
            log(f"{self.name}: logs and configs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- bridge
    def config(
        self,
        name: str = "bridge",
        *,
        max_in_flight: int = 256,
        max_connections: int | None = None,
        rate: float = 0,
        burst: int = 20,
        metrics: bool = True,
        shutdown_timeout: float = 10,
        kafka: dict[str, Any] | None = None,
        shared: dict[str, Any] | None = None,
        delivery: dict[str, Any] | None = None,
        gateway: dict[str, Any] | None = None,
    ) -> Path:
        """A bridge config for this world: the bench rule, unlimited rate unless `rate`, WARNING logs.

        `shared` is `delivery.rate_limit.shared` (the quota shared through Redis), off by default.
        """
        data: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "topics": [self.topic],
                "group_id": self.group,
                "auto_offset_reset": "earliest",
                "dead_letter_topic": self.dlq,
                "session_timeout_ms": 10000,
                "heartbeat_interval_ms": 1000,
                **(kafka or {}),
            },
            "gateway": {
                "url": self.sim_url,
                "app_key": APP_KEY,
                "app_secret": APP_SECRET,
                "sign_method": "hmac-sha256",
                "timeout_seconds": 10,
                "max_connections": max_connections or max_in_flight,
                **(gateway or {}),
            },
            "delivery": {
                "max_in_flight": max_in_flight,
                "ordering": "recipient",
                "rate_limit": {"per_second": rate, "burst": burst, **({"shared": shared} if shared else {})},
                "retry": {"max_attempts": 12, "initial_backoff_seconds": 0.1, "max_backoff_seconds": 2},
                "shutdown_timeout_seconds": shutdown_timeout,
                **(delivery or {}),
            },
            "rules": {"inline": [BENCH_RULE]},
            "metrics": {"enabled": metrics},
            "logging": {"level": "WARNING", "format": "json"},
        }
        return self.stack.write_config(name, data)

    def start_bridge(self, config: Path, name: str = "bridge") -> BridgeProc:
        """Start `python -m bridge run -c config` (not waiting for readiness).

        With BENCH_BRIDGE_TREE=<dir> the bridge package of that directory runs instead of this tree's (e.g. an
        export of another commit: `git archive <rev> | tar -x -C <dir>`), with this tree's bench around it.
        """
        tree = os.environ.get("BENCH_BRIDGE_TREE")
        if not tree:
            proc = self.stack.start_bridge(config, name=name)
        else:
            port = free_port()
            launch = f"import sys; sys.path.insert(0, {tree!r}); from bridge.cli import main; sys.exit(main())"
            argv = [sys.executable, "-c", launch, "run", "-c", str(config)]
            base = self.stack.spawn(name, argv, {"BRIDGE_METRICS_LISTEN": f"127.0.0.1:{port}"})
            proc = BridgeProc(base.name, base.popen, base.log_path, metrics_port=port, config_path=config)
            self.stack.procs[-1] = proc
        self.bridges.append(proc)
        return proc

    def check_alive(self) -> None:
        """Raise with the log tail if a bridge or the simulator died."""
        for proc in self.stack.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")

    # ---------------------------------------------------------------- simulator
    def sim_stats(self) -> dict[str, Any]:
        """GET /_sim/stats."""
        status, body = http_get(f"{self.sim_base}/_sim/stats", timeout=10)
        if status != 200:
            raise RuntimeError(f"simulator stats: HTTP {status}")
        return dict(orjson.loads(body))

    def accepted_ids(self) -> set[str]:
        """The event ids (`json_data.id`) of every message the simulator accepted."""
        return {orjson.loads(m["message"]["json_data"])["id"] for m in self.sim_messages()}

    def sim_messages(self) -> list[dict[str, Any]]:
        """GET /_sim/messages (every accepted msg_key with its first_received time)."""
        with urllib.request.urlopen(f"{self.sim_base}/_sim/messages", timeout=120) as resp:  # noqa: S310
            return list(orjson.loads(resp.read()))

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """POST /_sim/faults (a partial update of the fault knobs at run time); the knobs now."""
        req = urllib.request.Request(  # noqa: S310 - loopback URL we built
            f"{self.sim_base}/_sim/faults", data=orjson.dumps(knobs), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback URL we built
            return dict(orjson.loads(resp.read()))

    def committed_to_end(self, timeout: float = 30.0) -> bool:
        """Wait until the group committed every partition to its end; False on timeout."""
        ends = end_offsets(self.bootstrap, self.topic, self.partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = committed(self.bootstrap, self.group, self.topic)
            if all(got.get(p, -1) == end for p, end in ends.items() if end > 0):
                return True
            time.sleep(0.5)
        return False


class LoopProbe:
    """Times GET /healthz of a bridge every 10 ms in a thread: the bridge's event-loop stalls, seen from outside.

    /healthz is answered by the bridge's own event loop, so a slow answer means the loop was busy (or the
    process descheduled). `stalls(ms)` lists (epoch seconds, milliseconds) of the answers slower than `ms`.
    """

    def __init__(self, proc: BridgeProc, interval: float = 0.01) -> None:
        self._url = f"{proc.metrics_url}/healthz"
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._run, name="loop-probe", daemon=True)

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            http_get(self._url, timeout=5)
            self.samples.append((t, (time.time() - t) * 1000))
            self._stop.wait(self._interval)

    def stalls(self, ms: float = 50.0) -> list[tuple[float, float]]:
        """Probes slower than `ms` milliseconds: (epoch seconds sent, milliseconds)."""
        return [(t, d) for t, d in self.samples if d > ms]


@dataclass
class Window:
    """What happened between the first accepted message and the last expected one."""

    events: int  # accepted inside the window
    seconds: float
    cpu_seconds: dict[int, float]  # per bridge pid
    accepted_before: int
    sim_cpu_seconds: float = 0.0
    machine_busy_cores: float = 0.0  # all processes, whole machine (ours and other people's)
    machine_steal_cores: float = 0.0  # time the hypervisor gave our vCPUs to someone else

    def load(self) -> dict[str, float]:
        """Where the machine's CPU went during the window, in cores."""
        bridges = sum(self.cpu_seconds.values()) / self.seconds
        sim = self.sim_cpu_seconds / self.seconds
        return {
            "bridges_cores": round(bridges, 2),
            "simulator_cores": round(sim, 2),
            "machine_busy_cores": round(self.machine_busy_cores, 2),
            "rest_cores_broker_runner_others": round(self.machine_busy_cores - bridges - sim, 2),
            "steal_cores": round(self.machine_steal_cores, 2),
        }

    @property
    def events_per_s(self) -> float:
        """Throughput over the window."""
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_us_per_event(self) -> float:
        """CPU microseconds of all measured bridges per event."""
        return sum(self.cpu_seconds.values()) / self.events * 1e6 if self.events else math.nan


def measure_window(
    world: World,
    pids: Sequence[int],
    total: int,
    *,
    start_when: Callable[[int], bool] = lambda accepted: accepted > 0,
    stall_seconds: float = 60.0,
    poll: float = 0.05,
) -> Window:
    """Poll the simulator: open the window when `start_when(accepted)` holds (CPU and clock read), close it
    when `total` messages were accepted. Fails if nothing progresses for `stall_seconds`."""
    t0 = None
    cpu0: dict[int, float] = {}
    acc0 = 0
    sim0 = 0.0
    sys0 = (0.0, 0.0, 0.0)
    last, last_change = -1, time.monotonic()
    while True:
        accepted = int(world.sim_stats()["accepted"])
        now = time.monotonic()
        if t0 is None and start_when(accepted):
            cpu0 = {pid: cpu_seconds(pid) for pid in pids}
            sim0, sys0 = cpu_seconds(world.sim_pid), system_cpu()
            t0, acc0 = now, accepted
        if accepted >= total:
            cpu1 = {pid: cpu_seconds(pid) for pid in pids}
            sim1, sys1 = cpu_seconds(world.sim_pid), system_cpu()
            assert t0 is not None
            seconds = now - t0
            return Window(
                accepted - acc0,
                seconds,
                {pid: cpu1[pid] - cpu0[pid] for pid in pids},
                acc0,
                sim_cpu_seconds=sim1 - sim0,
                machine_busy_cores=(sys1[0] - sys0[0]) / seconds if seconds else 0.0,
                machine_steal_cores=(sys1[1] - sys0[1]) / seconds if seconds else 0.0,
            )
        if accepted != last:
            last, last_change = accepted, now
        elif now - last_change > stall_seconds:
            raise RuntimeError(f"no progress for {stall_seconds}s at {accepted}/{total} accepted")
        world.check_alive()
        time.sleep(poll)


def wait_accepted(world: World, total: int, timeout: float) -> int:
    """Wait until the simulator accepted `total` distinct messages; the count reached."""
    deadline = time.monotonic() + timeout
    accepted = 0
    while time.monotonic() < deadline:
        accepted = int(world.sim_stats()["accepted"])
        if accepted >= total:
            return accepted
        time.sleep(0.2)
    return accepted


def save_json(path: Path, data: Any) -> None:
    """Write JSON (pretty, stable key order as given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
