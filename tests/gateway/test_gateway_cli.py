"""`bridge gateway-sim` as a real process, `bridge send` end to end, and the GMT+8 timestamp under another TZ."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import leakguard
import pytest
from rawhttp import bad_status_gateway

from bridge.cli import main
from bridge.gateway.client import TopClient
from bridge.gateway.protocol import parse_timestamp
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults
from bridge.models import Verdict

from .conftest import APP_KEY, APP_SECRET, MOBILE, SimFactory, gateway_settings, message

READY_TIMEOUT = 30.0
LISTENING = re.compile(r"listening http://127\.0\.0\.1:(\d+)/router/rest\n")


async def start_sim_process(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "gateway-sim",
        "--listen",
        "127.0.0.1:0",
        "--app-key",
        APP_KEY,
        "--app-secret",
        APP_SECRET,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_gateway_sim_process_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    proc = await start_sim_process("--qps", "1000", "--seed", "3")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)).decode()
        m = LISTENING.fullmatch(line)
        assert m, line
        url = f"http://127.0.0.1:{m.group(1)}/router/rest"
        async with TopClient(gateway_settings(url)) as client:
            assert (await client.send(message())).verdict is Verdict.DELIVERED
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert await proc.stdout.read() == b""  # exactly one line on stdout
        assert await proc.stderr.read() == b""
    finally:
        await stop_process(proc)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--drop-rate", "2"], "drop_rate must be between 0 and 1"),
        (["--listen", "nonsense"], "--listen expects HOST:PORT"),
    ],
    ids=["bad-rate", "bad-listen"],
)
def test_gateway_sim_bad_options(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway-sim", *args]) == 2
    assert error in capsys.readouterr().err


def test_gateway_sim_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["gateway-sim", "--listen", f"127.0.0.1:{port}"]) == 1
    assert "cannot listen" in capsys.readouterr().err


# --- bridge send ---------------------------------------------------------------------------------------


def write_config(tmp_path: Path, url: str, secret: str = APP_SECRET) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            kafka:
              bootstrap_servers: "127.0.0.1:9092"
              topics: [t]
            gateway:
              url: {url}
              app_key: {APP_KEY}
              app_secret: {secret}
              timeout_seconds: 2
            """),
        encoding="utf-8",
    )
    return path


async def bridge_send(*argv: str) -> int:
    """`bridge send ...` in a worker thread (it runs its own event loop, like the real command)."""
    return await asyncio.to_thread(main, ["send", *argv])


@pytest.fixture
def config(sim: SimGateway, tmp_path: Path) -> Path:
    return write_config(tmp_path, sim.url)


async def test_send_delivered(sim: SimGateway, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = "0b5f7a52-3c1d-4e8e-9b6a-2f1c3d4e5f60"
    argv = ["-c", str(config), "--mobile", MOBILE, "--json-data", '{"a": 1}', "--resource-url", "https://x.example/1"]
    assert await bridge_send(*argv, "--msg-key", key, "--source", "forum") == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"delivered msg_key={key} request_id=\S+ latency_ms=\d+\.\d\n", out), out
    assert MOBILE not in out
    sent = sim.state.messages[key].message
    assert sent["mobile_receiver"] == MOBILE and sent["json_data"] == '{"a": 1}' and sent["source"] == "forum"
    assert sent["event_type"] == "mobile_receiver" and isinstance(sent["event_time_millis"], int)


async def test_send_json_output(sim: SimGateway, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await bridge_send("-c", str(config), "--event-type", "push_app", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "delivered" and out["http_status"] == 200
    assert sim.state.messages[out["msg_key"]].message["event_type"] == "push_app"


@pytest.mark.parametrize(
    "case",
    [
        (Faults(reject_mobile_prefixes=("138",)), APP_SECRET, 1, r"rejected code=50 sub_code=isv\.invalid-parameter"),
        (Faults(), "wrong", 4, r"systemic code=25 msg=Invalid signature"),
        (Faults(http_503_rate=1), APP_SECRET, 3, r"retryable http=503 http_status: 503"),
        (Faults(qps=1, ban_seconds=5), APP_SECRET, 3, r"throttled code=7 .* ban_seconds=5 "),
    ],
    ids=["rejected", "systemic", "retryable", "throttled"],
)
async def test_send_not_delivered(
    make_sim: SimFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[Faults, str, int, str]
) -> None:
    faults, secret, status, pattern = case
    sim = await make_sim(faults, monotonic=lambda: 1.0)
    if faults.qps:
        sim.state.throttle.admit(1.0)  # the one call this second is used up
    config = write_config(tmp_path, sim.url, secret)
    assert await bridge_send("-c", str(config), "--mobile", MOBILE) == status
    assert re.match(pattern, capsys.readouterr().out)


async def test_send_without_mobile_fails_locally_and_sends_nothing(
    sim: SimGateway, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await bridge_send("-c", str(config)) == 2
    assert "--mobile is required" in capsys.readouterr().err
    assert sim.state.stats.total_requests == 0


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_send_to_a_gateway_with_a_malformed_status_line_prints_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    session = "98765432109876"
    async with bad_status_gateway() as url:
        config = write_config(tmp_path, url)
        config.write_text(config.read_text() + f"  session: '{session}'\n", encoding="utf-8")
        argv = ["-c", str(config), "--mobile", MOBILE, *(["--json"] if as_json else [])]
        assert await bridge_send(*argv) == 3  # retryable
    out = capsys.readouterr().out
    assert "Invalid status" in out  # the cause is still there...
    assert "session=********" in out  # ...with the credentials scrubbed from the URL it quotes
    assert session not in out
    assert APP_SECRET not in out
    assert not re.search(r"sign=[0-9A-F]{16}", out)


async def test_send_bad_json_data(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await bridge_send("-c", str(config), "--mobile", MOBILE, "--json-data", "{nope") == 2
    assert "--json-data is not valid JSON" in capsys.readouterr().err


async def test_send_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await bridge_send("-c", str(tmp_path / "missing.yaml"), "--mobile", MOBILE) == 2
    assert "missing.yaml" in capsys.readouterr().err


async def test_send_as_a_real_process(sim: SimGateway, config: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "send",
        "-c",
        str(config),
        "--mobile",
        MOBILE,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await stop_process(proc)
    leakguard.record("output of bridge send", out + err)
    assert proc.returncode == 0, err
    assert out.startswith(b"delivered ")
    assert sim.state.stats.accepted == 1


# --- the timestamp is GMT+8 whatever the host zone ------------------------------------------------------

TZ_SCRIPT = """
import asyncio, json, time, uuid
from urllib.parse import parse_qs, urlsplit
from bridge.gateway.client import TopClient
from bridge.gateway.sim import SimGateway
from bridge.models import MobileReceiverMessageEvent
from bridge.settings import GatewaySettings

async def main():
    msg = MobileReceiverMessageEvent(str(uuid.uuid4()), int(time.time() * 1000), "push_app")
    async with SimGateway(app_key="k", app_secret="s") as sim:
        async with TopClient(GatewaySettings(url=sim.url, app_key="k", app_secret="s")) as client:
            url, _ = client.encode(msg)
            outcome = await client.send(msg)
    ts = parse_qs(urlsplit(url).query)["timestamp"][0]
    print(json.dumps({"ts": ts, "now": time.time(), "tzname": list(time.tzname),
                      "local": time.strftime("%Y-%m-%d %H:%M:%S"), "verdict": outcome.verdict.value}))

asyncio.run(main())
"""


async def test_timestamp_is_gmt8_on_a_new_york_host() -> None:
    env = {**os.environ, "TZ": "America/New_York"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TZ_SCRIPT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await stop_process(proc)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert set(result["tzname"]) <= {"EST", "EDT"}  # the zone really applied
    assert result["verdict"] == "delivered"
    assert abs(parse_timestamp(result["ts"]) - result["now"]) < 5
    assert result["ts"] != result["local"]
