"""Profile the bridge at full load with py-spy: where its CPU goes, by function (self and inclusive %).

Runs the fast_single set-up (one bridge, the fast Go stand-in for the gateway, a backlog large enough to keep
it busy; `BENCH_PROFILE_BATCH=20` profiles batches of 20 instead, `BENCH_PROFILE_GATEWAY=sim` the Python
simulator) and attaches `py-spy record --format raw` to the bridge for a fixed time once deliveries flow. The collapsed
stacks are folded per function (file:function, line numbers dropped):

- self %: share of CPU samples whose innermost frame is that function (where the time is actually spent);
- inclusive %: share of samples in which the function appears anywhere on the stack (what it causes).

Only samples of a thread on the CPU are counted (py-spy's default without --idle). Needs py-spy
(`.venv/bin/pip install py-spy`); the scenario is skipped when it is missing.

    python -m bench.run_all --only profile       # also writes the raw stacks and an SVG flame graph to /tmp
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import ROOT, ScenarioResult, World, log, produce_backlog

EVENTS = 150_000
QUICK_EVENTS = 30_000
SECONDS = 20
QUICK_SECONDS = 5
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, or on PATH)."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3", f"{ROOT}/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file


def fold(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, self samples per function, inclusive samples per function) from collapsed stacks."""
    total = 0
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame.strip())
            name = f"{_short(m.group('file'))}:{m.group('func')}" if m else frame.strip()
            frames.append(name)
        if not frames:
            continue
        # the first frame of py-spy's raw output is the thread ("process N:..." / "thread ..."), skip it
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    return total, self_c, incl


def package(function: str) -> str:
    """The component a folded function name belongs to (for the self-time breakdown)."""
    file = function.split(":", 1)[0]
    if function == "asyncio/runners.py:Runner.run":
        return "event loop (uvloop, C: I/O and callbacks)"
    if file.startswith("bridge/gateway/"):
        return "bridge.gateway (TopClient: encode, sign)"
    if file.startswith(("bridge/rules/", "<rule")):
        return "bridge.rules (+ compiled rule code)"
    if file == "<string>":
        return "generated __init__ (dataclasses)"
    if file.startswith("bridge/"):
        return "bridge (" + file.removeprefix("bridge/").split("/", 1)[0].removesuffix(".py") + ")"
    top = file.split("/", 1)[0]
    return top.removesuffix(".py")


def profile_bridge(events: int, seconds: int, out_prefix: Path) -> dict[str, Any]:
    """Run one bridge through a backlog and record it with py-spy; the folded profile."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not installed (.venv/bin/pip install py-spy)")
    gateway = "sim" if os.environ.get("BENCH_PROFILE_GATEWAY") == "sim" else "standin"
    batch = int(os.environ.get("BENCH_PROFILE_BATCH", "1"))
    with World("profile", gateway=gateway) as world:
        produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        extra = {"batch": {"max_messages": batch}} if batch > 1 else {}
        bridge = world.start_bridge(world.config(gateway=extra))
        deadline = time.monotonic() + 90
        while int(world.sim_stats()["accepted"]) < 2000:
            world.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("no deliveries within 90 s")
            time.sleep(0.1)
        raw_path = out_prefix.with_suffix(".txt")
        svg_path = out_prefix.with_suffix(".svg")
        before = int(world.sim_stats()["accepted"])
        cmd = [exe, "record", "--pid", str(bridge.popen.pid), "--rate", "250", "--nonblocking"]
        r = subprocess.run(
            [*cmd, "--format", "raw", "-o", str(raw_path), "--duration", str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        delivered = int(world.sim_stats()["accepted"]) - before
        if r.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed ({r.returncode}): {r.stderr[-2000:]}")
        # a flame graph of a few more seconds, for humans
        subprocess.run(
            [*cmd, "--format", "flamegraph", "-o", str(svg_path), "--duration", str(min(seconds, 10))],
            capture_output=True,
            timeout=seconds + 60,
            check=False,
        )
    total, self_c, incl = fold(raw_path.read_text())
    if not total:
        raise RuntimeError("py-spy recorded no samples")

    def top(c: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"function": k, "pct": round(v * 100 / total, 1)} for k, v in c.most_common(n)]

    by_package: Counter[str] = Counter()
    for name, count in self_c.items():
        by_package[package(name)] += count
    return {
        "gateway": gateway,
        "batch_max_messages": batch,
        "self_by_component": top(by_package, 25),
        "events_delivered_while_recording": delivered,
        "seconds": seconds,
        "samples": total,
        "raw_stacks": str(raw_path),
        "flamegraph": str(svg_path),
        "top_self": top(self_c, 30),
        "top_inclusive": top(incl, 40),
    }


def scenario_profile(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """py-spy profile of one bridge at full load (informational rows: the top self-time functions)."""
    res = ScenarioResult("profile")
    out = Path(tempfile.gettempdir()) / f"bench-profile-{time.strftime('%Y%m%d-%H%M%S')}"
    log("profile: one bridge at full load under py-spy")
    prof = profile_bridge(QUICK_EVENTS if quick else EVENTS, QUICK_SECONDS if quick else SECONDS, out)
    res.details = prof
    for entry in prof["self_by_component"][:8]:
        res.row(f"self time in {entry['function']}", entry["pct"], "%")
    for entry in prof["top_self"][:5]:
        res.row(f"self: {entry['function']}", entry["pct"], "%")
    res.row("samples (250/s while on CPU)", prof["samples"], "")
    return res


if __name__ == "__main__":
    from bench.run_all import main

    raise SystemExit(main(["--only", "profile", *sys.argv[1:]]))
