"""Connecting to Kafka without giving up: a broker that is down, frozen or unreachable is waited for, not fatal.

`connect_with_retry` starts an aiokafka client (consumer or producer) with a deadline per attempt and retries
with capped, jittered backoff until it connects or the process is asked to stop. Every failed attempt is one
WARNING naming the bootstrap servers and the reason; the caller's `on_error` keeps /readyz truthful meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bridge.flow.backoff import backoff_delay

log = logging.getLogger("bridge.kafka")

T = TypeVar("T")

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


def describe_kafka_error(exc: BaseException, timeout: float | None = None) -> str:
    """One line for logs and /readyz: what went wrong talking to the brokers."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s (broker down, frozen or unreachable)" if timeout else "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


async def connect_with_retry(
    what: str,
    make: Callable[[], T],
    start: Callable[[T], Awaitable[Any]],
    close: Callable[[T], Awaitable[Any]],
    *,
    servers: str,
    timeout: float,
    stop: asyncio.Event,
    on_error: Callable[[str], None],
    rand: Callable[[], float] = random.random,
) -> T | None:
    """A started client, or None when `stop` was set first. Never raises for a broker outage.

    `make()` builds a fresh client (aiokafka clients cannot be started twice), `start(client)` connects it,
    `close(client)` releases a client whose start failed.
    """
    attempt = 0
    while not stop.is_set():
        client = make()
        try:
            await asyncio.wait_for(start(client), timeout)
        except Exception as exc:  # KafkaError, OSError, TimeoutError, ssl errors: all mean not connected
            with contextlib.suppress(Exception):
                await close(client)
            attempt += 1
            reason = describe_kafka_error(exc, timeout)
            on_error(reason)
            delay = INITIAL_BACKOFF_SECONDS + backoff_delay(attempt, 1.0, MAX_BACKOFF_SECONDS, rand)
            log.warning(
                "kafka unreachable: retrying",
                extra={
                    "ctx": {
                        "client": what,
                        "bootstrap_servers": servers,
                        "error": reason,
                        "attempt": attempt,
                        "retry_in_seconds": round(delay, 1),
                    }
                },
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            continue
        if attempt:
            log.info("kafka reachable: connected", extra={"ctx": {"client": what, "after_attempts": attempt + 1}})
        return client
    return None
