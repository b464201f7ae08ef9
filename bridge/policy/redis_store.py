"""Policy state shared by every instance through Redis: one optimistic transaction per decision.

    WATCH <keys of the message>  ─►  MGET  ─►  decide() in Python  ─►  MULTI  SET … PX ttl  EXEC
                                                                         (EXEC refused: another instance
                                                                          changed a key — decide again
                                                                          after a short random pause)
Within one instance a recipient's decisions are made one at a time (`bridge.policy.stage`), so refused EXECs
only happen between instances deciding for the same recipient at the same moment.
The decision logic is the same pure function as in-process (`bridge.policy.decide`); Redis only holds its
JSON state, so the two stores cannot disagree. All keys of one decision share a hash tag (the recipient's
tag), so the transaction works on Redis Cluster too. Keys never hold a phone number.

When Redis fails or does not answer within the timeout, the decision is made with this process's own state
(`MemoryPolicyStore`: caps and windows then count per instance), the gauge `bridge_policy_state_degraded` is
1, and Redis is tried again for the next decision a second later. Nothing waits on Redis for longer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from bridge.flow.quota_store import credentials, redis_options
from bridge.metrics import Metrics
from bridge.policy.decide import Decision, Subject, decide, state_keys
from bridge.policy.store import MemoryPolicyStore, PolicyStore
from bridge.rules.policies import RulePolicy
from bridge.settings import Settings

log = logging.getLogger("bridge.policy")

RETRY_REDIS_SECONDS = 1.0  # while degraded, Redis is tried again at most this often
MAX_CONFLICTS = 8  # EXECs refused in a row (other instances deciding for the same recipient) before degrading
CONFLICT_BACKOFF_SECONDS = 0.002  # after the n-th refused EXEC, wait up to n times this (jitter spreads contenders)


class PolicyStateError(Exception):
    """Redis could not be used for a decision (error, timeout, or endless write conflicts)."""


class RedisPolicyStore:
    """Policy state in Redis under `prefix`; see the module docstring. No I/O before `start()`."""

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        timeout: float,
        metrics: Metrics,
        username: str | None = None,
        password: str | None = None,
        ssl_cafile: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.prefix = prefix
        self._timeout = timeout
        self._m = metrics
        self._clock = clock
        self._rand = rand
        self._fallback = MemoryPolicyStore()
        self.degraded = False
        self._retry_at = 0.0
        options = redis_options(
            url, timeout, username=username, password=password, ssl_cafile=ssl_cafile, name="campus-bridge-policy"
        )
        self._client: Redis = Redis.from_url(url, socket_timeout=timeout, **options)
        metrics.policy_state_degraded.set(0)

    def key(self, tag: str, name: str) -> str:
        """The Redis key of state `name` of the recipient tagged `tag` (the tag is the hash tag)."""
        return f"{self.prefix}:{{{tag}}}:{name}"

    async def start(self) -> None:
        """Check Redis answers; if not, start degraded (decisions use this process's state meanwhile)."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._degrade(f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._client.aclose()

    async def decide(self, policy: RulePolicy, subject: Subject, now_ms: int) -> Decision:
        """Decide in Redis; with Redis unusable, in this process (degraded) — never raises for Redis."""
        if self.degraded and self._clock() < self._retry_at:
            return self._fallback.decide_now(policy, subject, now_ms)
        try:
            async with asyncio.timeout(self._timeout):
                decision = await self._decide(policy, subject, now_ms)
        except (RedisError, OSError, TimeoutError, PolicyStateError) as exc:
            self._m.policy_state_errors.inc()
            self._degrade(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return self._fallback.decide_now(policy, subject, now_ms)
        if self.degraded:
            self.degraded = False
            self._m.policy_state_degraded.set(0)
            log.info("policy state: Redis is back, caps and windows are shared again", extra={"ctx": {}})
        return decision

    async def _decide(self, policy: RulePolicy, subject: Subject, now_ms: int) -> Decision:
        names = state_keys(policy, subject)
        keys = names.all()
        redis_keys = [self.key(names.tag, k) for k in keys]
        for attempt in range(MAX_CONFLICTS):
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*redis_keys)
                    raw = await pipe.mget(redis_keys)
                    states = {k: orjson.loads(v) for k, v in zip(keys, raw, strict=True) if v is not None}
                    updates, decision = decide(policy, states, subject, now_ms)
                    if not updates:
                        return decision
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for k, (value, expires) in updates.items():
                        ttl = expires - now_ms
                        if ttl <= 0:
                            pipe.delete(self.key(names.tag, k))
                        else:
                            pipe.set(self.key(names.tag, k), orjson.dumps(value), px=ttl)
                    await pipe.execute()
                    return decision
                except WatchError:  # another instance decided for this recipient meanwhile: decide again
                    await asyncio.sleep(self._rand() * CONFLICT_BACKOFF_SECONDS * (attempt + 1))
                    continue
        raise PolicyStateError(f"{MAX_CONFLICTS} write conflicts in a row on one recipient's state")

    def _degrade(self, cause: str) -> None:
        self._retry_at = self._clock() + RETRY_REDIS_SECONDS
        if self.degraded:
            return
        self.degraded = True
        self._m.policy_state_degraded.set(1)
        log.warning(
            "policy state: Redis unusable, deciding with this instance's own counters and windows until it is back",
            extra={"ctx": {"error": cause, "prefix": self.prefix}},
        )


def build_policy_store(settings: Settings, metrics: Metrics) -> PolicyStore:
    """`delivery.policy_state` as a store: in this process, or in Redis (its own connection, or the quota's)."""
    state = settings.delivery.policy_state
    if state.store == "memory":
        return MemoryPolicyStore()
    conn = state.redis or settings.delivery.rate_limit.shared
    assert conn is not None  # checked by the settings
    return RedisPolicyStore(
        url=conn.redis_url,
        prefix=state.key_prefix or f"campus-bridge:{settings.kafka.group_id}:policy",
        timeout=state.timeout_ms / 1000.0,
        metrics=metrics,
        **credentials(conn),
    )
