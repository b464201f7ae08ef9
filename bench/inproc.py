"""The bridge's per-message Python work in one process, counted in CPU instructions by callgrind (repeatable).

Wall-clock and even CPU-time figures of the end-to-end scenarios move by ±30 % on a shared 2-core machine.
This harness runs the hot path without the network: `Pipeline.take` (decode, map with BENCH_RULE, offsets)
→ `DeliveryEngine` (ordering, workers, limiter, outcome handling, metrics) → `TopClient` (encode, sign, send,
parse, classify) over a transport that answers every call at once with the gateway's success envelope (one per
message for a batch). Kafka fetching and the sockets are left out. Under valgrind's callgrind the instruction
count is the same from run to run (±0.3 % measured), so small changes can be compared:

    python -m bench.inproc --callgrind [--batch 20]     # instructions per message: two runs, N2 - N1
    python -m bench.inproc --messages 30000             # just run it (CPU µs per message, noisy)
    PYTHONPATH=/tmp/other-tree python bench/inproc.py --callgrind   # the same for another tree's code

The per-message figure is (instructions of a run with 6,144 messages − those of one with 2,048) / 4,096,
which cancels start-up (imports, rule compilation).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

from bench.common import BENCH_RULE, ROOT, event_bytes
from bridge.delivery import DeliveryEngine
from bridge.gateway import batch
from bridge.gateway.client import TopClient
from bridge.gateway.protocol import RESPONSE_KEY
from bridge.gateway.transport import Endpoint, Response
from bridge.kafka.offsets import PartitionOffsets
from bridge.metrics import Metrics
from bridge.models import RecordMeta
from bridge.pipeline import Pipeline
from bridge.rules import load_rules
from bridge.settings import load_settings
from bridge.work import DeadLetter, PartitionState

_RESULT = (
    b'{"result":{"content":true,"request_id":"4h5k2j3l","error_code":"200","error_msg":"success","success":true,'
    b'"error_level":"0","error_ext_info":"{\\"errormsg\\":\\"ok\\"}"},"request_id":"4h5k2j3l"}'
)
OK = b'{"' + RESPONSE_KEY.encode() + b'":' + _RESULT + b"}"
SEPARATOR = batch.SEPARATOR.encode()


class InstantTransport:
    """Answers every call with success (one envelope per call of a batch) after one event-loop turn."""

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def post(self, endpoint: Endpoint, query_tail: str, body: bytes) -> Response:
        """The success answer for this request."""
        await asyncio.sleep(0)
        if endpoint.content_type == batch.CONTENT_TYPE:
            return Response(200, batch.join_responses([OK] * body.count(SEPARATOR)), None)
        return Response(200, OK, None)


class NoDeadLetters:
    """Nothing is dead-lettered in this harness."""

    async def publish(self, letter: DeadLetter) -> None:
        """Accept and forget."""


def _settings(batch_max: int, workdir: Path) -> Any:
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"], "group_id": "g", "dead_letter_topic": "t.dlq"},
        "gateway": {
            "url": "http://127.0.0.1:9/router/rest",
            "app_key": "bench-app",
            "app_secret": "bench-secret",
            "batch": {"max_messages": batch_max},
        },
        "delivery": {"max_in_flight": 256, "rate_limit": {"per_second": 0}},
        "rules": {"inline": [BENCH_RULE]},
    }
    path = workdir / "inproc.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path)


async def run(batch_max: int, messages: int) -> float:
    """Push `messages` records through pipeline, engine and client; the process CPU µs per message."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(batch_max, Path(tmp))
    metrics = Metrics()
    client = TopClient(settings.gateway, observer=metrics)
    client._transport = InstantTransport()  # the harness's transport instead of the pool
    engine = DeliveryEngine(
        settings=settings.delivery,
        sender=client,
        dead_letters=NoDeadLetters(),
        metrics=metrics,
        batch_max=batch_max,
        batch_wait_seconds=settings.gateway.batch.max_wait_ms / 1000,
    )
    pipeline = Pipeline(settings, load_rules(settings), engine, metrics)
    await engine.start()
    part = PartitionState("t", 0, PartitionOffsets(messages + 1, None))
    values = [event_bytes(i) for i in range(messages)]
    now_ms = time.time_ns() // 1_000_000
    cpu = time.process_time()
    for i, value in enumerate(values):
        pipeline.take(part, RecordMeta("t", 0, i, now_ms, None, ()), value)
        if i % 512 == 511:  # like the source's bounded window: let the engine catch up
            await engine.wait_idle(600)
    if not await engine.wait_idle(600):
        raise RuntimeError("the engine did not finish")
    cpu = time.process_time() - cpu
    await engine.stop(1)
    return cpu / messages * 1e6


def callgrind(batch_max: int) -> int:
    """Instructions per message: callgrind totals of two runs (6,144 and 2,048 messages), difference / 4,096."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    # PYTHONPATH chooses the code measured (e.g. an export of another commit); this tree by default
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    totals = []
    for n in (2048, 6144):
        done = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
             "--batch", str(batch_max), "--messages", str(n)],
            cwd=ROOT, capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        m = re.search(r"Collected : (\d+)", done.stderr)
        if m is None:
            raise RuntimeError(f"no callgrind total in:\n{done.stderr[-2000:]}")
        totals.append(int(m.group(1)))
    return (totals[1] - totals[0]) // 4096


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__.split("\n", 1)[0])
    p.add_argument("--batch", type=int, default=1, help="gateway.batch.max_messages (default 1: single calls)")
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--callgrind", action="store_true", help="count instructions per message under callgrind")
    args = p.parse_args(argv)
    if args.callgrind:
        print(f"batch {args.batch}: {callgrind(args.batch):,} instructions per message")
    else:
        print(f"batch {args.batch}: {uvloop.run(run(args.batch, args.messages)):.1f} µs CPU per message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
