"""The simulator's control API, fault knobs, determinism and the throttle window (pure parts included)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from bridge.gateway.client import TopClient
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults, Throttle
from bridge.models import Verdict

from .conftest import SimFactory, gateway_settings, message


def control(sim: SimGateway, path: str) -> str:
    return sim.url.replace("/router/rest", path)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def post_json(http: aiohttp.ClientSession, url: str, body: Any = None) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else b""
    async with http.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


async def test_messages_are_deduplicated_with_counts(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    first, second = message(), message()
    async with TopClient(gateway_settings(sim.url)) as client:
        for msg in (first, second, first):
            assert (await client.send(msg)).verdict is Verdict.DELIVERED
    listed = await get_json(http, control(sim, "/_sim/messages"))
    assert [(m["msg_key"], m["count"]) for m in listed] == [(first.msg_key, 2), (second.msg_key, 1)]
    assert listed[0]["message"] == first.to_api_dict()
    assert listed[0]["first_received"] <= listed[0]["last_received"]
    only = await get_json(http, control(sim, f"/_sim/messages?msg_key={second.msg_key}"))
    assert [m["msg_key"] for m in only] == [second.msg_key]
    stats = await get_json(http, control(sim, "/_sim/stats"))
    assert stats == {
        "total_requests": 3,
        "accepted": 2,
        "duplicates": 1,
        "refusals": {},
        "http_errors": {},
        "dropped": 0,
        "hung": 0,
        "bad_bodies": 0,
        "business_failures": 0,
        "batches": 0,
        "batch_messages": 0,
        "bans": 0,
        "calls_during_ban": 0,
    }


async def test_faults_partial_update_and_reset(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(Faults(latency_ms=1, seed=7))
    status, knobs = await post_json(http, control(sim, "/_sim/faults"), {"http_503_rate": 1.0})
    assert status == 200
    assert (knobs["http_503_rate"], knobs["latency_ms"], knobs["seed"]) == (1.0, 1.0, 7)
    async with TopClient(gateway_settings(sim.url)) as client:
        assert (await client.send(message())).http_status == 503
        status, _ = await post_json(
            http, control(sim, "/_sim/faults"), {"http_503_rate": 0, "reject_mobile_prefixes": ["138"]}
        )
        assert (await client.send(message())).code == 50
        stats = await get_json(http, control(sim, "/_sim/stats"))
        assert (stats["http_errors"], stats["refusals"]) == ({"503": 1}, {"50": 1})
        status, body = await post_json(http, control(sim, "/_sim/reset"))
        assert (status, body) == (200, {"ok": True})
        assert await get_json(http, control(sim, "/_sim/faults")) == Faults(latency_ms=1, seed=7).to_dict()
        assert (await get_json(http, control(sim, "/_sim/stats")))["total_requests"] == 0
        assert await get_json(http, control(sim, "/_sim/messages")) == []
        assert (await client.send(message())).verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"nope": 1}, "unknown fault knob 'nope'"),
        ({"drop_rate": 1.5}, "drop_rate must be between 0 and 1"),
        ({"drop_rate": 0.6, "hang_rate": 0.6}, "add up to 1.2"),
        ({"qps": 1.5}, "qps must be an integer"),
        ({"latency_ms": "5"}, "latency_ms must be a number"),
        ({"latency_ms": -1}, "latency_ms must be >= 0"),
        ({"reject_mobile_prefixes": [1]}, "list of strings"),
        ({"seed": "x"}, "seed must be an integer"),
        ([1], "expected a JSON object"),
    ],
    ids=["unknown", "rate-range", "rate-sum", "qps-int", "number", "negative", "prefixes", "seed", "not-object"],
)
async def test_faults_validation(sim: SimGateway, http: aiohttp.ClientSession, body: Any, error: str) -> None:
    status, answer = await post_json(http, control(sim, "/_sim/faults"), body)
    assert status == 400
    assert error in answer["error"]
    assert await get_json(http, control(sim, "/_sim/faults")) == Faults().to_dict()


async def test_faults_bad_json(sim: SimGateway, http: aiohttp.ClientSession) -> None:
    async with http.post(control(sim, "/_sim/faults"), data=b"{") as resp:
        assert resp.status == 400


async def test_seeded_faults_are_deterministic(make_sim: SimFactory) -> None:
    faults = Faults(seed=42, isp_error_rate=0.3, http_503_rate=0.2, business_failure_rate=0.2, latency_jitter_ms=2)

    async def run() -> list[str]:
        sim = await make_sim(faults)
        async with TopClient(gateway_settings(sim.url)) as client:
            return [(await client.send(message())).code_label for _ in range(40)]

    first, second = await run(), await run()
    assert first == second
    assert {"0", "15", "http_503", "business_failure"} <= set(first)


async def test_latency_is_injected(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(latency_ms=150))
    async with TopClient(gateway_settings(sim.url)) as client:
        outcome = await client.send(message())
    assert outcome.verdict is Verdict.DELIVERED
    assert outcome.latency_seconds >= 0.15


async def test_stop_ends_hung_requests(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(hang_rate=1, hang_seconds=600))
    async with TopClient(gateway_settings(sim.url, timeout_seconds=30)) as client:
        import asyncio

        task = asyncio.create_task(client.send(message()))
        while sim.state.stats.hung == 0:
            await asyncio.sleep(0.01)
        await sim.stop()
        outcome = await asyncio.wait_for(task, 10)
    assert outcome.verdict is Verdict.RETRYABLE
    assert not sim.state.messages


# --- pure parts ----------------------------------------------------------------------------------------


def test_throttle_sliding_window() -> None:
    t = Throttle(qps=3, ban_seconds=2)
    assert [t.admit(x) for x in (0.0, 0.2, 0.4)] == [None, None, None]
    assert t.admit(0.9) == 2  # 4th call within one second: ban
    assert t.admit(1.5) == 2  # 1.4 s left, rounded up
    assert t.admit(2.5) == 1
    assert (t.bans, t.calls_during_ban) == (1, 2)
    assert [t.admit(x) for x in (2.95, 3.0, 3.5, 3.9)] == [None, None, None, 2]
    # a window that slides: calls one second apart never trip it
    s = Throttle(qps=1, ban_seconds=1)
    assert [s.admit(float(x)) for x in range(5)] == [None] * 5


def test_unlimited_throttle() -> None:
    t = Throttle(qps=0, ban_seconds=1)
    assert all(t.admit(0.0) is None for _ in range(10_000))


def test_fault_draws_follow_rates() -> None:
    from bridge.gateway.simstate import SimState

    state = SimState(Faults(seed=1, drop_rate=0.25, isp_error_rate=0.25))
    draws = [state.draw_fault() for _ in range(4000)]
    assert 850 < draws.count("drop") < 1150
    assert 850 < draws.count("isp_error") < 1150
    assert SimState(Faults()).draw_fault() is None


def test_faults_accept_comma_separated_prefixes() -> None:
    assert Faults().updated({"reject_mobile_prefixes": "138,139"}).reject_mobile_prefixes == ("138", "139")
