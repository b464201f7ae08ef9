"""The bridge's own speed, against the fast Go gateway stand-in (bench/standin), and its peers on the same job.

The project's simulator costs ~300 µs CPU per request, more than the bridge: on 2 cores it, not the bridge,
sets the pace. The stand-in answers the same API with the same checks (signature included) for a small
fraction of that, so these scenarios show the bridge's own cost. Each run: a fresh 4-partition topic, N
events of `event_bytes` pre-produced, then ONE process (bridge or peer) starts from the earliest offset; the
window opens at the stand-in's first accepted message and closes when it has accepted all N. Figures: events/s
over the window, the process's CPU (utime+stime, /proc) per event, its RSS at the end, the stand-in's CPU per
HTTP request, and afterwards whether the group's offsets were committed to the end.

  fast_single   `bridge run`, single calls (/router/rest)           targets >= 8,000 ev/s, <= 100 µs/event
  fast_batch    `bridge run`, gateway.batch.max_messages 20        targets >= 15,000 ev/s, <= 40 µs/event
  slow_gateway  CPU per event with the stand-in answering after 30 ms, next to 0 ms (single calls, same
                config): target ratio <= 1.3
  peers         interleaved rounds of: a naive aiokafka+aiohttp script (bench/peers/naive.py), Benthos core
                with a franz-go input (bench/peers/benthos), the bridge with single calls and with batches

`python -m bench.fast [--quick] [--only fast_single,...] [--repeat N]` runs them alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    APP_KEY,
    APP_SECRET,
    ROOT,
    ScenarioResult,
    World,
    free_port,
    go_build,
    log,
    measure_window,
    median,
    produce_backlog,
    rss_bytes,
)
from bridge.devstack import Proc
from bridge.gateway.protocol import METHOD

EVENTS = 100_000
QUICK_EVENTS = 20_000
MAX_IN_FLIGHT = 256
BATCH = 20
SLOW_MS = 30.0
PEER_IN_FLIGHT = 64  # the naive script's semaphore and Benthos' http_client max_in_flight, as in issue 11
TARGET_SINGLE = (8_000, 100.0)  # events/s, µs CPU per event
TARGET_BATCH = (15_000, 40.0)
TARGET_SLOW_RATIO = 1.3
# Figures from before this wave (issue 11): (events/s, µs CPU per event).
BEFORE_SIM = (2_146, 459.0)  # `make bench` throughput against the Python simulator
BEFORE_STANDIN = (6_726, 142.7)  # against the issue reporter's fast stand-in
ISSUE_NAIVE = (5_896, 147.5)  # measured by the issue reporter
ISSUE_BENTHOS = (12_105, 92.5)  # measured by the issue reporter
BENTHOS_SRC = ROOT / "bench" / "peers" / "benthos"

Launcher = Callable[[World], Proc]


# ---------------------------------------------------------------------------------------------- the systems
def bridge_launcher(*, batch: int = 1, max_in_flight: int = MAX_IN_FLIGHT) -> Launcher:
    """`bridge run` with the bench config; `batch` > 1 turns on gateway.batch."""

    def launch(world: World) -> Proc:
        extra = {"batch": {"max_messages": batch}} if batch > 1 else {}
        return world.start_bridge(world.config(max_in_flight=max_in_flight, gateway=extra))

    return launch


def naive_launcher(world: World) -> Proc:
    """The naive script (bench/peers/naive.py)."""
    argv = [
        sys.executable, "-m", "bench.peers.naive", "--bootstrap", world.bootstrap, "--topic", world.topic,
        "--group", world.group, "--url", world.sim_url, "--app-key", APP_KEY, "--app-secret", APP_SECRET,
        "--in-flight", str(PEER_IN_FLIGHT),
    ]  # fmt: skip
    return world.stack.spawn("naive", argv, env={"PYTHONPATH": str(ROOT)})


# The same job in Benthos: BENCH_RULE's message in bloblang, TOP signing in bloblang (the signed text is the
# sent text), the stock http_client output. Benthos treats any 2xx as delivered (it cannot read TOP's
# error_response in a 200); that costs it nothing here, the stand-in accepts every call.
BENTHOS_CONFIG = """\
http:
  address: 127.0.0.1:{http_port}
logger:
  level: WARN
input:
  kafka_lite:
    seed_brokers: [{bootstrap}]
    topic: {topic}
    consumer_group: {group}
pipeline:
  processors:
    - mapping: |
        let ev = content().parse_json()
        let data = {{"id": $ev.id, "seq": $ev.seq.string(), "title": $ev.title,
                    "p": metadata("kafka_partition"), "o": metadata("kafka_offset")}}
        let msg = {{
          "msg_key": uuid_v4(),
          "event_time_millis": metadata("kafka_timestamp_ms").number(),
          "json_data": $data.format_json(no_indent: true).string(),
          "event_type": "mobile_receiver",
          "source": "campus-bench",
          "action": "note",
          "resource_id": $ev.id,
          "resource_url": "https://campus.example/notes/" + $ev.id,
          "mobile_receiver": $ev.to
        }}
        let event = $msg.format_json(no_indent: true).string()
        let params = {{
          "app_key": "{app_key}", "format": "json", "method": "alibaba.campus.mc.message.sendmessagetomobile",
          "sign_method": "hmac-sha256", "v": "2.0",
          "timestamp": now().ts_format("2006-01-02 15:04:05", "Asia/Shanghai"),
          "mobile_receiver_message_event": $event
        }}
        let canonical = $params.keys().sort().map_each(k -> k + $params.get(k)).join("")
        meta top_sign = $canonical.hash("hmac_sha256", "{app_secret}").encode("hex").uppercase()
        meta top_ts = $params.timestamp
        root = "mobile_receiver_message_event=" + $event.escape_url_query()
output:
  http_client:
    url: '{url}'
    verb: POST
    headers:
      Content-Type: application/x-www-form-urlencoded;charset=utf-8
    max_in_flight: {in_flight}
"""


def benthos_binary() -> Path:
    """The Benthos peer (Benthos core + the franz-go input), built on first use (modules from the Go proxy)."""
    return go_build(BENTHOS_SRC, "benthos-peer")


def benthos_launcher(world: World) -> Proc:
    """Benthos running BENTHOS_CONFIG."""
    config = world.workdir / "benthos.yaml"
    static = f"app_key={APP_KEY}&format=json&method={METHOD}&sign_method=hmac-sha256&v=2.0"
    url = world.sim_url + "?" + static + "&timestamp=${! @top_ts.escape_url_query() }&sign=${! @top_sign }"
    text = BENTHOS_CONFIG.format(
        http_port=free_port(), bootstrap=world.bootstrap, topic=world.topic, group=world.group,
        app_key=APP_KEY, app_secret=APP_SECRET, url=url, in_flight=PEER_IN_FLIGHT,
    )  # fmt: skip
    config.write_text(text)
    return world.stack.spawn("benthos", [str(benthos_binary()), "run", str(config)])


# ---------------------------------------------------------------------------------------------- one run
def run_one(launch: Launcher, events: int, *, latency_ms: float = 0.0, name: str = "fast") -> dict[str, Any]:
    """One process through a pre-produced backlog against the stand-in; the window's figures."""
    sim_args = ["--latency-ms", str(latency_ms)] if latency_ms else []
    with World(name, gateway="standin", sim_args=sim_args) as world:
        produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        started = time.monotonic()
        proc = launch(world)
        pid = proc.popen.pid
        stats0: dict[str, Any] = {}

        def opened(accepted: int) -> bool:
            if accepted > 0:
                stats0.update(world.sim_stats())
                return True
            return False

        win = measure_window(world, [pid], events, start_when=opened)
        stats1 = world.sim_stats()
        rss = rss_bytes(pid)
        committed = world.committed_to_end(timeout=30)
        requests = int(stats1["total_requests"]) - int(stats0.get("total_requests", 0))
        return {
            "events": events,
            "latency_ms": latency_ms,
            "startup_to_first_delivery_seconds": round(time.monotonic() - started - win.seconds, 2),
            "window_events": win.events,
            "window_seconds": round(win.seconds, 3),
            "events_per_s": round(win.events_per_s, 1),
            "cpu_us_per_event": round(win.cpu_us_per_event, 1),
            "rss_mib_at_end": round(rss / 2**20, 1),
            "http_requests_in_window": requests,
            "events_per_request": round(win.events / requests, 2) if requests else None,
            "standin_cpu_us_per_request": round(win.sim_cpu_seconds / requests * 1e6, 1) if requests else None,
            "standin_cpu_us_per_event": round(win.sim_cpu_seconds / win.events * 1e6, 1),
            "cpu_cores_during_window": win.load(),
            "committed_to_end": committed,
            "duplicates": int(stats1["duplicates"]),
            "refusals": stats1["refusals"],
        }


def _runs(label: str, launch: Launcher, n: int, repeat: int, **kw: Any) -> list[dict[str, Any]]:
    runs = []
    for i in range(repeat):
        log(f"{label}: run {i + 1}/{repeat}, {n:,} events")
        r = run_one(launch, n, **kw)
        log(f"{label}: {r['events_per_s']:,.0f} events/s, {r['cpu_us_per_event']:.1f} µs CPU/event")
        runs.append(r)
    return runs


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return median([r[key] for r in runs])


def _headline(res: ScenarioResult, runs: list[dict[str, Any]], target: tuple[float, float], what: str) -> None:
    eps, cpu = _median(runs, "events_per_s"), _median(runs, "cpu_us_per_event")
    res.row(f"{what}: events/s (median)", eps, "ev/s", f">= {target[0]:,.0f}", eps >= target[0])
    res.row(f"{what}: bridge CPU per event (median)", cpu, "µs", f"<= {target[1]:g}", cpu <= target[1])
    res.row(f"{what}: bridge RSS at the end (median)", _median(runs, "rss_mib_at_end"), "MiB")
    standin = _median(runs, "standin_cpu_us_per_request")
    res.row(f"{what}: stand-in CPU per HTTP request (median, context)", standin, "µs")
    res.row(
        f"{what}: machine busy during window (median, of 2 cores)",
        median([r["cpu_cores_during_window"]["machine_busy_cores"] for r in runs]),
        "cores",
    )
    res.row(
        f"{what}: committed to end / duplicates",
        sum(r["duplicates"] for r in runs),
        "dup",
        "all committed, 0 dup",
        all(r["committed_to_end"] for r in runs) and not any(r["duplicates"] for r in runs),
    )


def _before(res: ScenarioResult) -> None:
    res.row("before this wave, same kind of stand-in (issue 11): events/s", BEFORE_STANDIN[0], "ev/s")
    res.row("before this wave, same kind of stand-in (issue 11): CPU per event", BEFORE_STANDIN[1], "µs")
    res.row("before this wave, Python simulator (make bench): events/s", BEFORE_SIM[0], "ev/s")
    res.row("before this wave, Python simulator (make bench): CPU per event", BEFORE_SIM[1], "µs")


# ---------------------------------------------------------------------------------------------- scenarios
def scenario_fast_single(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """One bridge, single calls, against the stand-in; medians of `repeat`."""
    res = ScenarioResult("fast_single")
    n = QUICK_EVENTS if quick else EVENTS
    runs = _runs("fast_single", bridge_launcher(), n, repeat, name="fast-single")
    ctx["fast_single_cpu_us"] = _median(runs, "cpu_us_per_event")
    res.details = {"events": n, "max_in_flight": MAX_IN_FLIGHT, "runs": runs}
    _headline(res, runs, TARGET_SINGLE, "single calls")
    _before(res)
    return res


def scenario_fast_batch(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """One bridge, batches of up to 20, against the stand-in; medians of `repeat`."""
    res = ScenarioResult("fast_batch")
    n = QUICK_EVENTS if quick else EVENTS
    runs = _runs("fast_batch", bridge_launcher(batch=BATCH), n, repeat, name="fast-batch")
    res.details = {"events": n, "max_in_flight": MAX_IN_FLIGHT, "batch_max_messages": BATCH, "runs": runs}
    _headline(res, runs, TARGET_BATCH, f"batches of {BATCH}")
    res.row(f"batches of {BATCH}: messages per HTTP request (median)", _median(runs, "events_per_request"), "")
    _before(res)
    return res


def scenario_slow_gateway(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """CPU per event at 30 ms gateway latency vs 0 ms: the same bridge config, runs interleaved."""
    res = ScenarioResult("slow_gateway")
    n = QUICK_EVENTS if quick else EVENTS
    fast_runs: list[dict[str, Any]] = []
    slow_runs: list[dict[str, Any]] = []
    for i in range(repeat):
        for latency, runs in ((0.0, fast_runs), (SLOW_MS, slow_runs)):
            log(f"slow_gateway: run {i + 1}/{repeat}, stand-in latency {latency:g} ms, {n:,} events")
            r = run_one(bridge_launcher(), n, latency_ms=latency, name="slow-gateway")
            log(f"slow_gateway: {r['events_per_s']:,.0f} events/s, {r['cpu_us_per_event']:.1f} µs CPU/event")
            runs.append(r)
    fast, slow = _median(fast_runs, "cpu_us_per_event"), _median(slow_runs, "cpu_us_per_event")
    ratio = slow / fast
    res.details = {"events": n, "max_in_flight": MAX_IN_FLIGHT, "runs_0ms": fast_runs, "runs_30ms": slow_runs}
    res.row("CPU per event at 0 ms (median)", fast, "µs")
    res.row(f"CPU per event at {SLOW_MS:g} ms (median)", slow, "µs")
    res.row(f"ratio {SLOW_MS:g} ms / 0 ms", ratio, "x", f"<= {TARGET_SLOW_RATIO}", ratio <= TARGET_SLOW_RATIO)
    slow_eps = _median(slow_runs, "events_per_s")
    res.row(f"events/s at {SLOW_MS:g} ms (median; bound by max_in_flight / latency)", slow_eps, "ev/s")
    res.row("before this wave: 459 µs/event at 0 ms vs 657 µs at 50 % load (Python simulator)", 657 / 459, "x")
    return res


def scenario_peers(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Interleaved rounds: naive script, Benthos, bridge (single), bridge (batch 20); medians per system."""
    res = ScenarioResult("peers")
    n = QUICK_EVENTS if quick else EVENTS
    systems: dict[str, Launcher] = {
        "naive aiokafka+aiohttp script": naive_launcher,
        "Benthos core 4.60 + franz-go input": benthos_launcher,
        "campus-bridge, single calls": bridge_launcher(),
        f"campus-bridge, batches of {BATCH}": bridge_launcher(batch=BATCH),
    }
    try:
        benthos_binary()
    except RuntimeError as exc:  # no Go toolchain or no module proxy: say so, run the rest
        log(f"peers: Benthos not run: {exc}")
        res.details["benthos_error"] = str(exc)
        del systems["Benthos core 4.60 + franz-go input"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for i in range(repeat):
        for name, launch in systems.items():
            log(f"peers: round {i + 1}/{repeat}: {name}")
            r = run_one(launch, n, name="peers")
            log(f"peers: {name}: {r['events_per_s']:,.0f} events/s, {r['cpu_us_per_event']:.1f} µs CPU/event")
            runs[name].append(r)
    res.details.update({"events": n, "runs": runs})
    for name, rs in runs.items():
        ok = all(r["committed_to_end"] for r in rs)
        res.row(f"{name}: events/s (median)", _median(rs, "events_per_s"), "ev/s")
        res.row(f"{name}: CPU per event (median)", _median(rs, "cpu_us_per_event"), "µs")
        res.row(f"{name}: RSS at the end (median)", _median(rs, "rss_mib_at_end"), "MiB")
        res.row(f"{name}: committed to end, duplicates", sum(r["duplicates"] for r in rs), "dup", "committed", ok)
    res.row("issue 11 (reporter's run): naive script events/s / µs", ISSUE_NAIVE[0], f"/ {ISSUE_NAIVE[1]} µs")
    res.row("issue 11 (reporter's run): Benthos events/s / µs", ISSUE_BENTHOS[0], f"/ {ISSUE_BENTHOS[1]} µs")
    res.row("issue 11 (reporter's run): bridge before this wave / µs", BEFORE_STANDIN[0], f"/ {BEFORE_STANDIN[1]} µs")
    return res


if __name__ == "__main__":
    from bench.run_all import main

    raise SystemExit(main(["--only", "fast_single,fast_batch,slow_gateway,peers", *sys.argv[1:]]))
