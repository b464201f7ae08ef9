"""`bridge gateway-sim`: run the simulated TOP gateway as a process (tests, the demo, integration work).

Prints exactly one line to stdout when it is ready, `listening http://HOST:PORT/router/rest`, and stops
cleanly (exit 0) on SIGTERM or SIGINT. `--listen HOST:0` picks a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

NAME = "gateway-sim"
HELP = "run the simulated TOP gateway (sendmessagetomobile) with throttling and fault injection"

# (flag, Faults field, type, help)
FAULT_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--qps", "qps", int, "app call limit per second, sliding window; 0 = unlimited (default 0)"),
    ("--ban-seconds", "ban_seconds", float, "ban length after exceeding --qps (default 1)"),
    ("--latency-ms", "latency_ms", float, "added latency per request, ms (default 0)"),
    ("--latency-jitter-ms", "latency_jitter_ms", float, "plus a uniform 0..N ms (default 0)"),
    ("--drop-rate", "drop_rate", float, "share of requests whose connection is closed without answer"),
    ("--hang-rate", "hang_rate", float, "share of requests held for --hang-seconds before the answer"),
    ("--hang-seconds", "hang_seconds", float, "how long a hung request is held (default 30)"),
    ("--http-502-rate", "http_502_rate", float, "share of requests answered HTTP 502 (HTML body)"),
    ("--http-503-rate", "http_503_rate", float, "share of requests answered HTTP 503 (HTML body)"),
    ("--bad-body-rate", "bad_body_rate", float, "share of requests answered 200 with a non-JSON body"),
    ("--isp-error-rate", "isp_error_rate", float, "share answered code 15 isp.top-remote-service-unavailable"),
    ("--business-failure-rate", "business_failure_rate", float, "share answered success=false, error_code 400"),
    ("--seed", "seed", int, "seed of the fault and jitter random sequence (deterministic runs)"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    p.add_argument("--app-key", default="campus-demo", help="the one app key accepted (default campus-demo)")
    p.add_argument("--app-secret", default="local-simulator-secret", help="its secret (default local-simulator-secret)")
    p.add_argument(
        "--clock-offset-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="run the gateway's clock S seconds ahead (negative: behind) of this host's, to test clock skew",
    )
    faults = p.add_argument_group("faults (also settable at run time: POST /_sim/faults)")
    for flag, _field, typ, text in FAULT_FLAGS:
        faults.add_argument(flag, type=typ, default=None, help=text)
    faults.add_argument(
        "--reject-mobile-prefix",
        action="append",
        default=None,
        metavar="PREFIX",
        help="refuse recipients starting with PREFIX permanently (code 50 isv.invalid-parameter); repeatable",
    )
    p.set_defaults(func=run)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); `[::1]:PORT` for IPv6. ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen expects HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def fault_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The fault knobs given on the command line (unset flags keep the defaults)."""
    changes = {field: getattr(args, field) for _f, field, _t, _h in FAULT_FLAGS if getattr(args, field) is not None}
    if args.reject_mobile_prefix:
        changes["reject_mobile_prefixes"] = [p for item in args.reject_mobile_prefix for p in item.split(",") if p]
    return changes


class _QuietClientErrors(logging.Filter):
    """Malformed requests are the client's problem (they get a 400): no traceback on the simulator's stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


def run(args: argparse.Namespace) -> int:
    """Validate the options, then serve until SIGTERM/SIGINT."""
    from bridge.gateway.loop import run as run_loop
    from bridge.gateway.simstate import Faults

    try:
        host, port = parse_listen(args.listen)
        faults = Faults().updated(fault_changes(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_loop(_serve(host, port, args.app_key, args.app_secret, faults, clock_offset=args.clock_offset_seconds))


async def _serve(host: str, port: int, app_key: str, app_secret: str, faults: Any, *, clock_offset: float) -> int:
    import time

    from bridge.gateway.sim import PATH, SimGateway

    logging.getLogger("aiohttp.server").addFilter(_QuietClientErrors())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    clock = (lambda: time.time() + clock_offset) if clock_offset else None
    gateway = SimGateway(app_key=app_key, app_secret=app_secret, faults=faults, clock=clock)
    try:
        try:
            await gateway.start(host, port)
        except OSError as exc:
            print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        shown = f"[{host}]" if ":" in host else host
        print(f"listening http://{shown}:{gateway.port}{PATH}", flush=True)
        await stop.wait()
        return 0
    finally:
        await gateway.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
