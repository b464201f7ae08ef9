"""`bridge check`'s Redis probes: each Redis server the config uses (the shared quota's, the policy state's)
answers PING with the configured credentials, and the quota's Lua script can be loaded (`SCRIPT LOAD` only
caches it: no key is read or written). One line per server; connection, authentication and ACL errors named.

The running bridge never stops delivering because Redis is gone (it falls back to a local share of the quota and
this process's own policy state, and says so), so the check is where a wrong URL or password shows up before
the instances quietly run degraded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bridge.checks import Check, Status
from bridge.flow.quota_store import LUA, credentials, redis_options
from bridge.redact import redact
from bridge.settings import RedisConnection, Settings


@dataclass(frozen=True, slots=True)
class Use:
    """One Redis server the config uses, and what for (`shared quota`, `policy state`, or both)."""

    purpose: str
    conn: RedisConnection
    loads_script: bool


def uses(settings: Settings) -> list[Use]:
    """The Redis servers of this config: none, the shared quota's, the policy state's (its own or the quota's)."""
    shared = settings.delivery.rate_limit.shared
    state = settings.delivery.policy_state
    found: list[Use] = []
    if shared is not None:
        together = state.store == "redis" and state.redis is None
        found.append(Use("shared quota and policy state" if together else "shared quota", shared, True))
    if state.store == "redis" and state.redis is not None:
        found.append(Use("policy state", state.redis, False))
    return found


def where(url: str) -> str:
    """`host:port/db` of a Redis URL: no scheme, no user name."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return f"{parts.hostname}:{parts.port or 6379}/{db}"


async def probe(settings: Settings, *, timeout_seconds: float = 10.0) -> list[Check]:
    """One check line per Redis server the config uses (none when it uses none)."""
    return [await _probe_one(use, timeout_seconds) for use in uses(settings)]


async def _probe_one(use: Use, timeout: float) -> Check:
    conn = use.conn
    name = f"redis {where(conn.redis_url)} ({use.purpose})"
    options = redis_options(conn.redis_url, timeout, name="campus-bridge-check", **credentials(conn))
    client: Redis = Redis.from_url(conn.redis_url, socket_timeout=timeout, **options)
    try:
        started = time.perf_counter()
        await client.ping()
        rtt_ms = (time.perf_counter() - started) * 1000
        info = await client.info("server")
        detail = f"PING {rtt_ms:.1f} ms, Redis {info.get('redis_version', '?')}"
        if use.loads_script:
            await client.script_load(LUA)
            detail += ", quota script loaded"
        return Check(name, Status.OK, detail)
    except redis_errors.AuthenticationError as exc:
        return Check(name, Status.FAIL, f"authentication failed: {redact(str(exc))} (check username/password)")
    except redis_errors.NoPermissionError as exc:
        return Check(name, Status.FAIL, f"the user may not run a command the bridge needs: {redact(str(exc))}")
    except redis_errors.TimeoutError:
        return Check(name, Status.FAIL, f"no answer within {timeout:g} s")
    except (redis_errors.ConnectionError, OSError) as exc:
        return Check(name, Status.FAIL, f"cannot connect: {redact(str(exc))}")
    except redis_errors.RedisError as exc:
        return Check(name, Status.FAIL, f"{type(exc).__name__}: {redact(str(exc))}")
    finally:
        await client.aclose()
