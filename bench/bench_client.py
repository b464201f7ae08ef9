"""CPU per message of the TopClient alone, single calls and batch calls, at several gateway latencies.

    .venv/bin/python -m bench.bench_client [--messages 20000] [--in-flight 64] [--batch 20] [--latency-ms 0,30]
                                           [--runs 3]

Starts `bridge gateway-sim` as its own process (pinned to CPU 0 when there are two or more) and sends
`--messages` messages through one TopClient from this process (pinned to CPU 1) with `--in-flight` concurrent
senders; for each latency (the simulator's `latency_ms` fault) it measures this process's CPU time
(`time.process_time`) per message and messages/s, median of `--runs`. `--batch N` (2..50) adds the same
measurement with `send_batch` of N messages per request (0 = single calls only, e.g. for a client without it).
Prints a table and one JSON line (`{"bench": "client", ...}`). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import urllib.request
from dataclasses import replace

from bench.bench_gateway_sim import APP_KEY, APP_SECRET, cpus, pin, sample_message, start_sim
from bridge.gateway.client import TopClient
from bridge.settings import GatewaySettings


def set_latency(url: str, ms: float) -> None:
    req = urllib.request.Request(  # noqa: S310 - a loopback URL this script started
        url.replace("/router/rest", "/_sim/faults"),
        data=json.dumps({"latency_ms": ms}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - a loopback URL we started
        resp.read()


async def measure(url: str, messages: int, in_flight: int, batch: int) -> tuple[float, float]:
    """(CPU µs per message in this process, messages/s) for `messages` messages, `batch` per request."""
    settings = GatewaySettings(url=url, app_key=APP_KEY, app_secret=APP_SECRET, max_connections=in_flight)
    template = sample_message()
    prefix = template.msg_key[:24]  # distinct msg_keys, cheaply (the callgrind method counts this part too)
    pending = [replace(template, msg_key=f"{prefix}{i:012x}") for i in range(messages)]
    failures = 0
    async with TopClient(settings) as client:
        await client.send(sample_message())  # connect once before the clock starts

        async def worker() -> None:
            nonlocal failures
            while pending:
                if batch > 1:
                    group = [pending.pop() for _ in range(min(batch, len(pending)))]
                    outcomes = await client.send_batch(group)
                else:
                    outcomes = [await client.send(pending.pop())]
                failures += sum(o.verdict.value != "delivered" for o in outcomes)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if failures:
        raise SystemExit(f"{failures} messages were not delivered")
    return cpu / messages * 1e6, messages / wall


def run_loop(coro: object) -> tuple[float, float]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]
    result: tuple[float, float] = uvloop.run(coro)  # type: ignore[arg-type]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--latency-ms", default="0", help="comma-separated simulator latencies, e.g. 0,30")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    cores = cpus()
    sim_cpu, own_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    modes = [1] + ([args.batch] if args.batch > 1 else [])
    rows: list[dict[str, object]] = []
    proc, url = start_sim()
    try:
        pin(proc.pid, sim_cpu)
        pin(os.getpid(), own_cpu)
        for latency in (float(x) for x in args.latency_ms.split(",")):
            set_latency(url, latency)
            for batch in modes:
                runs = [run_loop(measure(url, args.messages, args.in_flight, batch)) for _ in range(args.runs)]
                rows.append(
                    {
                        "latency_ms": latency,
                        "batch": batch,
                        "cpu_us_per_message": round(statistics.median(r[0] for r in runs), 1),
                        "cpu_us_runs": [round(r[0], 1) for r in runs],
                        "messages_per_second": round(statistics.median(r[1] for r in runs)),
                    }
                )
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"{'latency ms':>10}  {'batch':>5}  {'CPU µs/message':>14}  {'runs':<24}  messages/s")
    for r in rows:
        runs = ", ".join(str(x) for x in r["cpu_us_runs"])  # type: ignore[attr-defined]
        print(
            f"{r['latency_ms']:>10}  {r['batch']:>5}  {r['cpu_us_per_message']:>14}  {runs:<24}  "
            f"{r['messages_per_second']:,}"
        )
    print(json.dumps({"bench": "client", "in_flight": args.in_flight, "messages": args.messages, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
