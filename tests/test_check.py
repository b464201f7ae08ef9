"""`bridge check` end to end: a real broker and the simulated gateway; it reports and exits, and sends nothing.

In process through `bridge.cli.main` (the simulator in the test's loop, its clock skewed by injection), and
once as real processes (`bridge gateway-sim --clock-offset-seconds` and `bridge check`).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from bridge.cli import main
from bridge.devstack import LocalStack, RedisProc, free_port
from bridge.gateway.sim import SimGateway

APP_KEY = "check-app"
APP_SECRET = "test-secret"

World = Callable[..., Awaitable[tuple[Path, SimGateway]]]
TopicFactory = Callable[..., Awaitable[str]]  # the `new_topic` fixture of tests/conftest.py


@pytest.fixture
async def world(kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path) -> AsyncIterator[World]:
    """`await world(clock_offset=0, secret=…, **kafka_overrides)`: a simulator and a config for it and for two
    fresh topics (a 2-partition source, a DLQ); returns the config path and the simulator."""
    sims: list[SimGateway] = []

    async def make(*, clock_offset: float = 0.0, secret: str = APP_SECRET, **kafka: Any) -> tuple[Path, SimGateway]:
        source = await new_topic(2, prefix="check-src")
        dlq = await new_topic(1, prefix="check-dlq")
        sim = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET, clock=lambda: time.time() + clock_offset)
        await sim.start()
        sims.append(sim)
        config = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "topics": [source],
                "group_id": f"check-{uuid.uuid4().hex[:8]}",
                "dead_letter_topic": dlq,
                **kafka,
            },
            "gateway": {"url": sim.url, "app_key": APP_KEY, "app_secret": secret},
        }
        if "topic_pattern" in kafka:
            del config["kafka"]["topics"]
        path = tmp_path / f"check-{len(sims)}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path, sim

    try:
        yield make
    finally:
        for sim in sims:
            await sim.stop()


async def bridge_check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str], str]:
    """Run `bridge check` in a worker thread; (exit status, {check name: its line}, the summary line)."""
    code = await asyncio.to_thread(main, ["check", "-c", str(config), "--timeout-seconds", "10"])
    out, err = capsys.readouterr()
    assert err == ""
    *lines, last = out.splitlines()
    return code, {line[6:].split(": ", 1)[0]: line for line in lines}, last


async def sim_messages(sim: SimGateway) -> list[Any]:
    async with aiohttp.ClientSession() as http, http.get(sim.url.replace("/router/rest", "/_sim/messages")) as r:
        return list(orjson.loads(await r.read()))


def skew(line: str) -> float:
    """The seconds in `… local clock 123.4 s ahead/behind …`."""
    match = re.search(r"local clock (\d+\.\d) s (?:ahead of|behind)", line)
    assert match, line
    return float(match.group(1))


def names(config: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(config.read_text())["kafka"])


async def test_check_passes_with_the_right_secret_and_nothing_reaches_the_simulators_messages(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    config, sim = await world()
    k = names(config)
    code, lines, last = await bridge_check(config, capsys)
    assert code == 0, "\n".join(lines.values())
    assert list(lines) == [
        "config",
        "gateway credentials",
        "clock",
        "kafka connection",
        f"kafka topic {k['topics'][0]}",
        f"kafka group {k['group_id']}",
        f"kafka dead-letter topic {k['dead_letter_topic']}",
    ]
    assert all(line.startswith("OK    ") for line in lines.values()), lines
    assert "taobao.time.get accepted app key check-app signed with hmac-sha256" in lines["gateway credentials"]
    assert "2 partitions, READ allowed" in lines[f"kafka topic {k['topics'][0]}"]
    assert "WRITE allowed" in lines[f"kafka dead-letter topic {k['dead_letter_topic']}"]
    assert last == "7 ok"
    assert await sim_messages(sim) == []
    assert sim.state.stats.total_requests == 1  # the one taobao.time.get


async def test_check_with_a_deferred_topic_checks_it_and_its_consumer_group(
    world: World, capsys: pytest.CaptureFixture[str], new_topic: TopicFactory
) -> None:
    deferred = await new_topic(1, prefix="check-deferred")
    config, _ = await world(deferred_topic=deferred)
    k = names(config)
    code, lines, last = await bridge_check(config, capsys)
    assert code == 0, "\n".join(lines.values())
    assert list(lines)[-2:] == [f"kafka deferred topic {deferred}", f"kafka group {k['group_id']}.deferred"]
    assert lines[f"kafka deferred topic {deferred}"].startswith("OK    ")
    assert "1 partition, WRITE and READ allowed" in lines[f"kafka deferred topic {deferred}"]
    assert last == "9 ok"


async def test_check_fails_naming_the_code_with_a_wrong_secret(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    config, sim = await world(secret="wrong-secret")
    code, lines, last = await bridge_check(config, capsys)
    assert code == 1
    assert lines["gateway credentials"].startswith("FAIL  gateway credentials: code 25 Invalid signature")
    assert lines["clock"].startswith("OK    clock: local clock ")  # read from the Date header of the refusal
    assert skew(lines["clock"]) < 5
    assert "by its HTTP Date header" in lines["clock"]
    assert last == "6 ok, 1 failed"
    assert await sim_messages(sim) == []


@pytest.mark.parametrize(
    ("offset", "code", "clock_line"),
    [
        (120, 0, "WARN  clock: local clock "),
        (-900, 1, "FAIL  clock: the gateway refused the request's timestamp (code 31 Invalid timestamp"),
    ],
    ids=["gateway-2min-ahead-warns", "gateway-15min-behind-fails"],
)
async def test_check_reports_the_clock_skew_of_a_simulated_gateway(
    world: World, capsys: pytest.CaptureFixture[str], offset: float, code: int, clock_line: str
) -> None:
    config, sim = await world(clock_offset=offset)
    status, lines, _last = await bridge_check(config, capsys)
    assert status == code, lines
    assert lines["clock"].startswith(clock_line), lines["clock"]
    assert abs(skew(lines["clock"]) - abs(offset)) < 5
    if offset > 0:
        assert "s behind the gateway's (warn above 60 s" in lines["clock"]  # read from the gateway's `time`
        assert lines["gateway credentials"].startswith("OK")
    else:
        assert "s ahead of the gateway's, by its HTTP Date header" in lines["clock"]
        assert lines["gateway credentials"].startswith("SKIP")
    assert await sim_messages(sim) == []


async def test_check_fails_on_a_missing_topic_and_creates_nothing(
    world: World, capsys: pytest.CaptureFixture[str], kafka_bootstrap: str
) -> None:
    missing = f"check-missing-{uuid.uuid4().hex}"
    missing_dlq = f"check-missing-dlq-{uuid.uuid4().hex}"
    config, _sim = await world()
    data = yaml.safe_load(config.read_text())
    data["kafka"]["topics"].append(missing)
    data["kafka"]["dead_letter_topic"] = missing_dlq
    config.write_text(yaml.safe_dump(data))
    code, lines, _last = await bridge_check(config, capsys)
    assert code == 1
    assert lines[f"kafka topic {missing}"] == (
        f"FAIL  kafka topic {missing}: does not exist (UNKNOWN_TOPIC_OR_PARTITION)"
    )
    # the test broker auto-creates topics on first write: a missing DLQ is a warning, with the advice
    assert lines[f"kafka dead-letter topic {missing_dlq}"].startswith(
        f"WARN  kafka dead-letter topic {missing_dlq}: does not exist yet: the broker will create it"
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert missing not in topics and missing_dlq not in topics


async def test_check_with_a_topic_pattern_lists_what_it_matches(
    world: World, capsys: pytest.CaptureFixture[str], new_topic: TopicFactory
) -> None:
    prefix = f"checkpat{uuid.uuid4().hex[:8]}"
    first, second = await new_topic(1, prefix=prefix), await new_topic(1, prefix=prefix)
    config, _sim = await world(topic_pattern=rf"{prefix}-.*")
    code, lines, _last = await bridge_check(config, capsys)
    assert code == 0, lines
    line = lines[f"kafka topic_pattern {prefix}-.*"]
    assert line.startswith("OK") and "matches 2: " in line and first in line and second in line


async def test_check_fails_when_kafka_is_unreachable_and_skips_the_rest(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _sim = await world()
    data = yaml.safe_load(config.read_text())
    data["kafka"]["bootstrap_servers"] = f"127.0.0.1:{free_port()}"
    config.write_text(yaml.safe_dump(data))
    code, lines, _last = await bridge_check(config, capsys)
    assert code == 1
    assert lines["kafka connection"].startswith("FAIL  kafka connection: 127.0.0.1:")
    assert lines["kafka topics, group, dead-letter topic"].startswith("SKIP")
    assert lines["gateway credentials"].startswith("OK")


async def test_check_as_processes_against_a_gateway_sim_with_a_skewed_clock(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    source, dlq = await new_topic(1, prefix="check-src"), await new_topic(1, prefix="check-dlq")
    with LocalStack(tmp_path / "stack") as stack:
        url = await asyncio.to_thread(stack.start_sim, APP_KEY, APP_SECRET, extra=["--clock-offset-seconds", "300"])
        config = tmp_path / "check.yaml"
        kafka = {"bootstrap_servers": kafka_bootstrap, "topics": [source], "dead_letter_topic": dlq}
        gateway = {"url": url, "app_key": APP_KEY, "app_secret": APP_SECRET}
        config.write_text(yaml.safe_dump({"kafka": kafka, "gateway": gateway}))
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", "check", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("OK    config: ")
    clock = next(line for line in lines if line[6:].startswith("clock: "))
    assert clock.startswith("WARN  clock: local clock "), clock
    assert abs(skew(clock) - 300) < 5
    assert "behind the gateway's" in clock
    assert lines[-1] == "6 ok, 1 warning"


def with_redis(config: Path, **delivery: Any) -> Path:
    """The same config with `delivery` settings added (the Redis ones of these tests)."""
    data = yaml.safe_load(config.read_text())
    data["delivery"] = delivery
    config.write_text(yaml.safe_dump(data))
    return config


async def test_check_pings_the_shared_quota_redis_and_loads_its_script_without_writing_a_key(
    world: World, capsys: pytest.CaptureFixture[str], redis_url: str, redis_server: RedisProc
) -> None:
    import redis.asyncio as aioredis

    config, _ = await world()
    shared = {"redis_url": redis_url, "key_prefix": f"check-{uuid.uuid4().hex[:8]}"}
    with_redis(config, rate_limit={"per_second": 50, "shared": shared}, policy_state={"store": "redis"})
    code, lines, last = await bridge_check(config, capsys)
    assert code == 0, "\n".join(lines.values())
    name = f"redis 127.0.0.1:{redis_server.port}/0 (shared quota and policy state)"
    assert list(lines)[-1] == name
    assert re.match(r"OK    .*: PING \d+\.\d ms, Redis \d+\.\d+\.\d+, quota script loaded$", lines[name]), lines[name]
    assert last == "8 ok"
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.keys(f"*{shared['key_prefix']}*") == []  # nothing written under the quota's prefix
    finally:
        await client.aclose()


async def test_check_fails_naming_the_server_when_the_redis_is_unreachable(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = await world()
    port = free_port()  # nothing listens there
    with_redis(config, policy_state={"store": "redis", "redis": {"redis_url": f"redis://127.0.0.1:{port}/2"}})
    code, lines, last = await bridge_check(config, capsys)
    assert code == 1
    name = f"redis 127.0.0.1:{port}/2 (policy state)"
    assert lines[name].startswith(f"FAIL  {name}: cannot connect: "), lines[name]
    assert last == "7 ok, 1 failed"


async def test_check_reports_a_wrong_redis_password_without_printing_it(
    world: World, capsys: pytest.CaptureFixture[str], redis_url: str, redis_server: RedisProc
) -> None:
    import redis.asyncio as aioredis

    user = f"check-{uuid.uuid4().hex[:8]}"
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await admin.acl_setuser(user, enabled=True, passwords=["+right-password-1"], keys=["*"], commands=["+@all"])
        config, _ = await world()
        for password, expect in (("right-password-1", "OK"), ("wrong-password-2", "FAIL")):
            shared = {"redis_url": redis_url, "username": user, "password": password}
            with_redis(config, rate_limit={"per_second": 50, "shared": shared})
            code, lines, _ = await bridge_check(config, capsys)
            line = lines[f"redis 127.0.0.1:{redis_server.port}/0 (shared quota)"]
            assert line.startswith(expect), line
            assert code == (0 if expect == "OK" else 1)
            assert password not in "".join(lines.values())
        assert "authentication failed" in line
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()
