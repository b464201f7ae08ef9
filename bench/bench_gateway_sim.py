"""How fast is the simulated gateway, and what does one TopClient call cost in CPU?

    .venv/bin/python bench/bench_gateway_sim.py [--runs 3] [--seconds 5] [--connections 64]

1. Starts `bridge gateway-sim` as its own process, pinned to CPU 0 when the machine has two or more.
2. Drives it with `wrk` (Debian package `wrk`) pinned to CPU 1, cycling through pre-signed requests with
   distinct msg_keys (valid signatures, so every call takes the full check + accept path); falls back to an
   aiohttp load generator in another process when wrk is missing (that generator is slower than the sim, so
   its figure is a lower bound). Median requests/s over --runs runs.
3. Sends --client-requests messages through one TopClient (64 concurrent senders) from this process and
   reports the client's CPU microseconds per request.

Prints a table and one JSON line (`{"bench": "gateway_sim", ...}`). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bridge.gateway.client import TopClient
from bridge.models import MobileReceiverMessageEvent
from bridge.settings import GatewaySettings

APP_KEY, APP_SECRET = "bench-app", "bench-secret"
HEADERS = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def sample_message() -> MobileReceiverMessageEvent:
    return MobileReceiverMessageEvent(
        msg_key=str(uuid.uuid4()),
        event_time_millis=int(time.time() * 1000),
        event_type="mobile_receiver",
        mobile_receiver="13800000000",
        json_data='{"course":"CS101","room":"A-204","change":"moved"}',
        source="forum",
        action="comment",
        resource_id="123",
        resource_url="https://campus.example/p/123",
    )


def start_sim() -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "bridge", "gateway-sim", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*argv, "--app-key", APP_KEY, "--app-secret", APP_SECRET],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.fullmatch(r"listening (http://\S+)\n", line)
    if not m:
        proc.kill()
        raise SystemExit(f"gateway-sim did not start: {line!r}")
    return proc, m.group(1)


def signed_requests(url: str, count: int) -> list[tuple[str, bytes]]:
    client = TopClient(GatewaySettings(url=url, app_key=APP_KEY, app_secret=APP_SECRET))
    out = []
    for _ in range(count):
        full, body = client.encode(sample_message())
        parts = urlsplit(full)
        out.append((f"{parts.path}?{parts.query}", body))
    return out


def wrk_script(requests: list[tuple[str, bytes]], folder: Path) -> Path:
    """A wrk Lua script that cycles through the pre-signed requests (built in init, after wrk sets Host)."""
    lines = ["local raw = {}"]
    for i, (target, body) in enumerate(requests, 1):
        lines.append(f"raw[{i}] = {{{json.dumps(target)}, {json.dumps(body.decode())}}}")
    lines += [
        "local reqs = {}",
        "function init(args)",
        f'  local headers = {{["Content-Type"] = "{HEADERS["Content-Type"]}"}}',
        '  for i, r in ipairs(raw) do reqs[i] = wrk.format("POST", r[1], headers, r[2]) end',
        "end",
        "local n = 0",
        "function request()",
        "  n = n % #reqs + 1",
        "  return reqs[n]",
        "end",
    ]
    script = folder / "requests.lua"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


def run_wrk(url: str, script: Path, seconds: int, connections: int, cpu: int | None) -> float:
    parts = urlsplit(url)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"{parts.scheme}://{parts.netloc}"]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


def _aiohttp_generator(
    url: str, requests: list[tuple[str, bytes]], seconds: int, connections: int, q: multiprocessing.Queue[float]
) -> None:
    async def main() -> int:
        base = urlsplit(url)
        done = 0
        deadline = time.monotonic() + seconds
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker(offset: int) -> None:
                nonlocal done
                i = offset
                while time.monotonic() < deadline:
                    path, body = requests[i % len(requests)]
                    async with session.post(f"{base.scheme}://{base.netloc}{path}", data=body, headers=HEADERS) as r:
                        await r.read()
                    done += 1
                    i += connections

            await asyncio.gather(*(worker(k) for k in range(connections)))
        return done

    started = time.monotonic()
    count = asyncio.run(main())
    q.put(count / (time.monotonic() - started))


def run_aiohttp(url: str, requests: list[tuple[str, bytes]], seconds: int, connections: int, cpu: int | None) -> float:
    q: multiprocessing.Queue[float] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_aiohttp_generator, args=(url, requests, seconds, connections, q))
    proc.start()
    assert proc.pid is not None
    pin(proc.pid, cpu)
    rate = q.get(timeout=seconds + 60)
    proc.join(30)
    return rate


async def client_cpu(url: str, count: int, concurrency: int = 64) -> tuple[float, float]:
    """(CPU µs per request in this process, requests/s) for `count` TopClient sends."""
    settings = GatewaySettings(url=url, app_key=APP_KEY, app_secret=APP_SECRET, max_connections=concurrency)
    messages = [sample_message() for _ in range(count)]
    queue: asyncio.Queue[MobileReceiverMessageEvent] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    failures = 0
    async with TopClient(settings) as client:
        await client.send(sample_message())  # warm the pool

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                outcome = await client.send(queue.get_nowait())
                failures += outcome.verdict.value != "delivered"

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if failures:
        raise SystemExit(f"{failures} client sends were not delivered")
    return cpu / count * 1e6, count / wall


async def sim_stats(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as s, s.get(url.replace("/router/rest", "/_sim/stats")) as r:
        stats: dict[str, object] = await r.json()
        return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--distinct", type=int, default=2000, help="distinct pre-signed requests to cycle through")
    ap.add_argument("--client-requests", type=int, default=20000)
    ap.add_argument("--generator", choices=["auto", "wrk", "aiohttp"], default="auto")
    args = ap.parse_args()

    cores = cpus()
    sim_cpu, load_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "aiohttp"

    proc, url = start_sim()
    try:
        pin(proc.pid, sim_cpu)
        requests = signed_requests(url, args.distinct)
        rates = []
        with tempfile.TemporaryDirectory() as tmp:
            script = wrk_script(requests, Path(tmp))
            for _ in range(args.runs):
                if generator == "wrk":
                    rates.append(run_wrk(url, script, args.seconds, args.connections, load_cpu))
                else:
                    rates.append(run_aiohttp(url, requests, args.seconds, args.connections, load_cpu))
        stats = asyncio.run(sim_stats(url))
        if stats["refusals"] or stats["http_errors"]:
            raise SystemExit(f"the simulator refused benchmark requests: {stats}")
        pin(os.getpid(), load_cpu)
        client_us, client_rps = asyncio.run(client_cpu(url, args.client_requests))
    finally:
        proc.terminate()
        proc.wait(30)

    result = {
        "bench": "gateway_sim",
        "generator": generator,
        "connections": args.connections,
        "sim_pinned_cpu": sim_cpu,
        "sim_rps_median": round(statistics.median(rates)),
        "sim_rps_runs": [round(r) for r in rates],
        "client_cpu_us_per_request": round(client_us, 1),
        "client_rps_one_process": round(client_rps),
        "sim_accepted": stats["accepted"],
        "sim_duplicates": stats["duplicates"],
    }
    rows = [
        (f"simulator req/s, one core ({generator}, {args.connections} conns, median)", f"{result['sim_rps_median']:,}"),
        ("  runs", ", ".join(f"{round(r):,}" for r in rates)),
        ("TopClient CPU µs per request (64 in flight)", f"{result['client_cpu_us_per_request']}"),
        ("TopClient req/s, one process, sim on the other core", f"{result['client_rps_one_process']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
