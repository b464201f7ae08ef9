"""Builds the delivery engine's rate limiter from the config: a local GCRA, or the quota shared through Redis."""

from __future__ import annotations

import os
import socket
import time

from bridge.flow.limiter import Clock, GcraLimiter, Limiter
from bridge.flow.quota_store import RedisQuotaStore, credentials
from bridge.flow.shared_quota import SharedQuota
from bridge.metrics import Metrics
from bridge.settings import Settings


def default_key_prefix(app_key: str) -> str:
    """Redis key prefix of an app key's shared quota when `key_prefix` is not set (the app key, never the secret)."""
    return f"campus-bridge:{app_key}"


def instance_name(settings: Settings) -> str:
    """How this instance appears among the quota's live members: its static membership id, else host and pid."""
    return settings.kafka.group_instance_id or f"{socket.gethostname()}-{os.getpid()}"


def build_limiter(settings: Settings, metrics: Metrics, *, clock: Clock = time.monotonic) -> Limiter:
    """`delivery.rate_limit` as a Limiter: shared through Redis when `shared` is set, else per process."""
    rl = settings.delivery.rate_limit
    shared = rl.shared
    if shared is None:
        return GcraLimiter(rl.per_second, rl.burst, clock=clock)
    store = RedisQuotaStore(
        url=shared.redis_url,
        prefix=shared.key_prefix or default_key_prefix(settings.gateway.app_key),
        timeout=shared.timeout_ms / 1000.0,
        metrics=metrics,
        **credentials(shared),
    )
    return SharedQuota(
        store,
        rate=rl.per_second,
        burst=rl.burst,
        lease=shared.lease,
        member=instance_name(settings),
        metrics=metrics,
        expected_instances=shared.expected_instances,
        clock=clock,
    )
