"""`bridge check -c FILE`: verify the credentials, the clock and the Kafka access of a config; sends nothing.

Probes, one line each (`OK`, `WARN`, `FAIL`, `SKIP`), then a summary line:
- config: the file and every rule load (as `bridge validate`);
- gateway credentials: a signed `taobao.time.get` (it returns the gateway's time and notifies no one); a
  refusal is reported with the gateway's code (25 signature, 29 app key, 27 session …);
- clock: the local clock against the gateway's (warn above 60 s, fail above the gateway's 600 s);
- kafka connection, every source topic (exists, READ allowed) or what `topic_pattern` matches, the consumer
  group (can be described, READ allowed), the dead-letter topic (exists, WRITE allowed);
- redis, when the config uses it (`delivery.rate_limit.shared`, `delivery.policy_state`): PING with the
  configured credentials, the server's version, and the quota's Lua script loads (nothing read or written).
Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.checks import Check, Status, failed, summary
from bridge.cli import add_config_argument
from bridge.logs import quiet_logger
from bridge.settings import config_path, load_settings

if TYPE_CHECKING:
    from bridge.settings import Settings

NAME = "check"
HELP = "check gateway credentials, clock skew, Kafka access (topics, group, DLQ) and Redis without sending anything"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.add_argument(
        "--timeout-seconds", type=float, default=10.0, metavar="S", help="per probe and request (default 10)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config and its rules (a ConfigError exits 2), run every probe, print one line per check."""
    from bridge.gateway.loop import run as run_loop
    from bridge.rules import load_rules

    settings = load_settings(config_path(args.config))
    rules = load_rules(settings)
    checks = [Check("config", Status.OK, f"{settings.source_path} loads with {len(rules)} rules")]
    with quiet_logger("aiokafka"):  # failures are reported as checks, not as library log lines
        checks += run_loop(run_checks(settings, timeout_seconds=args.timeout_seconds))
    for check in checks:
        print(check.line())
    print(summary(checks))
    return 1 if failed(checks) else 0


async def run_checks(
    settings: Settings, *, timeout_seconds: float = 10.0, clock: Callable[[], float] = time.time
) -> list[Check]:
    """The gateway, Kafka and Redis probes, run at the same time; gateway lines first, Redis (if used) last."""
    from bridge import redis_check
    from bridge.gateway import timecheck
    from bridge.kafka import check as kafka_check

    gateway, kafka, redis = await asyncio.gather(
        timecheck.probe(settings.gateway, clock=clock, timeout_seconds=timeout_seconds),
        kafka_check.probe(settings.kafka, timeout_seconds=timeout_seconds),
        redis_check.probe(settings, timeout_seconds=timeout_seconds),
    )
    return [*gateway, *kafka, *redis]
