"""The benchmarks' Go stand-in for the gateway (bench/standin) answers like the simulator it replaces there.

Signatures are checked over query + body (single calls and batches), each call of a batch gets its own answer,
a batch with a wrong signature is refused as a whole, and the control API has the simulator's shapes. The
throughput figures measured against it are only worth something if the bridge pays there for real signing,
encoding and parsing, and gets the gateway's real answers.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from bench.common import standin_binary
from bridge.devstack import free_port, http_get
from bridge.gateway.client import TopClient
from bridge.gateway.protocol import SIGN_METHODS
from bridge.gateway.simstate import Faults, MessageRecord, SimState
from bridge.models import Verdict

from .conftest import APP_KEY, APP_SECRET, gateway_settings, message


@pytest.fixture
def standin() -> Iterator[str]:
    """The stand-in on a free port of 127.0.0.1 (built if its source changed); its base URL."""
    port = free_port()
    argv = [str(standin_binary()), "--listen", f"127.0.0.1:{port}", "--app-key", APP_KEY, "--app-secret", APP_SECRET]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # its one line once it listens ("" if it exited)
        assert line.strip() == f"listening http://127.0.0.1:{port}/router/rest", line
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def control(base: str, path: str, body: dict[str, object] | None = None) -> tuple[int, object]:
    """GET (or POST `body` as JSON to) the control API; (status, parsed JSON)."""
    if body is None:
        status, raw = http_get(base + path, timeout=5)
        return status, orjson.loads(raw)
    req = urllib.request.Request(base + path, data=orjson.dumps(body), method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


@pytest.mark.parametrize("sign_method", SIGN_METHODS)
async def test_signed_single_calls_and_batches_are_delivered_and_each_call_checked(
    standin: str, sign_method: str
) -> None:
    settings = gateway_settings(f"{standin}/router/rest", sign_method=sign_method)
    bad = message(msg_key="not-a-uuid")
    async with TopClient(settings) as client:
        single = await client.send(message())
        batch = await client.send_batch([message(), bad, message(mobile_receiver="13800000001")])
    assert single.verdict is Verdict.DELIVERED
    assert single.request_id
    assert [o.verdict for o in batch] == [Verdict.DELIVERED, Verdict.REJECTED, Verdict.DELIVERED]
    assert (batch[1].code, batch[1].sub_code) == (15, "isv.invalid-parameter")
    _, stats = control(standin, "/_sim/stats")
    assert isinstance(stats, dict)
    assert (stats["accepted"], stats["batches"], stats["batch_messages"]) == (3, 1, 3)
    assert stats["refusals"] == {"15": 1}


async def test_a_wrong_secret_is_refused_for_a_call_and_for_a_whole_batch(standin: str) -> None:
    settings = gateway_settings(f"{standin}/router/rest", app_secret="wrong-secret")
    async with TopClient(settings) as client:
        single = await client.send(message())
        batch = await client.send_batch([message(), message(mobile_receiver="13800000001")])
    assert (single.verdict, single.code) == (Verdict.SYSTEMIC, 25)
    assert [(o.verdict, o.code) for o in batch] == [(Verdict.SYSTEMIC, 25)] * 2
    assert "whole batch" in (batch[0].detail or "")
    _, stats = control(standin, "/_sim/stats")
    assert isinstance(stats, dict)
    assert stats["accepted"] == 0
    assert stats["refusals"] == {"25": 2}


async def test_the_control_api_has_the_simulators_shapes(standin: str) -> None:
    sent = message()
    async with TopClient(gateway_settings(f"{standin}/router/rest")) as client:
        assert (await client.send(sent)).verdict is Verdict.DELIVERED
        assert (await client.send(sent)).verdict is Verdict.DELIVERED  # the same msg_key again: a duplicate
    _, stats = control(standin, "/_sim/stats")
    assert isinstance(stats, dict)
    assert set(stats) == set(SimState(Faults()).stats_dict())
    assert (stats["accepted"], stats["duplicates"], stats["total_requests"]) == (1, 1, 2)
    _, records = control(standin, "/_sim/messages")
    assert isinstance(records, list)
    [record] = records
    assert set(record) == set(MessageRecord("k", {}, 1, 0.0, 0.0).to_dict())
    assert record["msg_key"] == sent.msg_key
    assert record["message"] == sent.to_api_dict()
    assert record["count"] == 2
    assert record["first_received"] <= record["last_received"] <= time.time()
    _, one = control(standin, f"/_sim/messages?msg_key={sent.msg_key}")
    assert one == records


async def test_the_latency_knob_delays_answers_and_unknown_knobs_are_refused(standin: str) -> None:
    status, knobs = control(standin, "/_sim/faults", {"latency_ms": 80})
    assert status == 200
    assert isinstance(knobs, dict)
    assert knobs["latency_ms"] == 80
    async with TopClient(gateway_settings(f"{standin}/router/rest")) as client:
        outcome = await client.send(message())
    assert outcome.verdict is Verdict.DELIVERED
    assert outcome.latency_seconds >= 0.08
    status, error = control(standin, "/_sim/faults", {"hang_rate": 0.5})
    assert status == 400
    assert "unknown fault knob" in str(error)


async def test_the_throttle_bans_the_app_and_drop_rate_closes_connections(standin: str) -> None:
    assert control(standin, "/_sim/faults", {"qps": 2, "ban_seconds": 5})[0] == 200
    async with TopClient(gateway_settings(f"{standin}/router/rest")) as client:
        passed = [await client.send(message()) for _ in range(2)]
        banned = await client.send(message())
        batch = await client.send_batch([message(), message(mobile_receiver="13800000001")])
        assert [o.verdict for o in passed] == [Verdict.DELIVERED] * 2
        assert (banned.verdict, banned.code, banned.ban_seconds) == (Verdict.THROTTLED, 7, 5.0)
        assert [(o.verdict, o.code) for o in batch] == [(Verdict.THROTTLED, 7)] * 2  # a ban refuses a batch whole
        assert control(standin, "/_sim/faults", {"qps": 0, "drop_rate": 1.0})[0] == 200
        dropped = await client.send(message())
    assert dropped.verdict is Verdict.RETRYABLE
    assert dropped.is_transport_failure
    _, stats = control(standin, "/_sim/stats")
    assert isinstance(stats, dict)
    assert (stats["bans"], stats["calls_during_ban"], stats["dropped"], stats["accepted"]) == (1, 2, 1, 2)
