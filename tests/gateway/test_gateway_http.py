"""The keep-alive HTTP/1.1 pool under TopClient: TLS, reuse, framing, timeouts, pool waits, proxies, redirects.

Real servers on loopback only: the simulated gateway (also behind TLS with a throwaway CA from `trustme`), and
small raw TCP stand-ins that answer scripted bytes for the framing cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from bridge.gateway.client import TopClient
from bridge.gateway.http import HttpPool
from bridge.gateway.sim import SimGateway
from bridge.gateway.simstate import Faults
from bridge.models import Outcome, Verdict

from .conftest import APP_KEY, APP_SECRET, SimFactory, gateway_settings, message, serve

SUCCESS = b'{"result":{"success":true},"request_id":"r1"}'


# --- raw stand-ins ----------------------------------------------------------------------------------

Answer = Callable[[int, bytes], bytes | None]  # (request number, request head) -> raw response, None = close


class RawServer:
    """A TCP server that reads HTTP requests and writes scripted raw responses; records what it saw."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.peers: set[tuple[str, int]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/router/rest"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.add(writer.get_extra_info("peername"))
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                m = re.search(rb"(?i)content-length: (\d+)", head)
                await reader.readexactly(int(m.group(1)) if m else 0)
                self.requests.append(head)
                raw = self.answer(len(self.requests), head)
                if raw is None:
                    return
                writer.write(raw)
                await writer.drain()
                if b"connection: close" in raw.lower():
                    return
        finally:
            writer.close()


def http_response(body: bytes = SUCCESS, status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


async def send_to(url: str, **settings: Any) -> Outcome:
    async with TopClient(gateway_settings(url, **settings)) as client:
        return await client.send(message())


# --- response framing -------------------------------------------------------------------------------

GZIPPED = gzip.compress(SUCCESS)
FRAMING: list[tuple[str, bytes, Verdict, str | None]] = [
    ("content-length", http_response(), Verdict.DELIVERED, None),
    (
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (SUCCESS[:10], SUCCESS[10:]))
        + b"0\r\n\r\n",
        Verdict.DELIVERED,
        None,
    ),
    ("until-close", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + SUCCESS, Verdict.DELIVERED, None),
    ("gzip", http_response(GZIPPED, headers="Content-Encoding: gzip\r\n"), Verdict.DELIVERED, None),
    ("interim-100", b"HTTP/1.1 100 Continue\r\n\r\n" + http_response(), Verdict.DELIVERED, None),
    ("malformed", b"HTTQ/9 banana\r\n\r\n", Verdict.RETRYABLE, "protocol: malformed HTTP response"),
    (
        "truncated-body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\nConnection: close\r\n\r\n" + SUCCESS,
        Verdict.RETRYABLE,
        "disconnected: connection closed before a complete response",
    ),
    (
        "bad-gzip",
        http_response(b"not gzip", headers="Content-Encoding: gzip\r\n"),
        Verdict.RETRYABLE,
        "protocol: response from 127.0.0.1",
    ),
    ("closed-without-answer", b"", Verdict.RETRYABLE, "disconnected: connection closed before a response"),
]


@pytest.mark.parametrize(("raw", "verdict", "detail"), [f[1:] for f in FRAMING], ids=[f[0] for f in FRAMING])
async def test_response_framing(raw: bytes, verdict: Verdict, detail: str | None) -> None:
    async with RawServer(lambda n, head: raw or None) as server:
        outcome = await send_to(server.url)
    assert outcome.verdict is verdict, outcome.describe()
    if detail is not None:
        assert outcome.detail is not None and outcome.detail.startswith(detail), outcome.detail


async def test_request_is_http11_with_host_length_and_no_proxy_headers() -> None:
    async with RawServer(lambda n, head: http_response()) as server:
        await send_to(server.url)
    head = server.requests[0].decode()
    assert head.startswith("POST /router/rest?method=alibaba.campus.mc.message.sendmessagetomobile&app_key=")
    assert " HTTP/1.1\r\n" in head
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n" in head
    assert "\r\nContent-Type: application/x-www-form-urlencoded;charset=utf-8\r\n" in head
    assert re.search(r"\r\nContent-Length: \d+\r\n", head)
    assert "campus-bridge/" in head


# --- connections ------------------------------------------------------------------------------------


async def test_connections_are_reused() -> None:
    async with RawServer(lambda n, head: http_response()) as server, TopClient(gateway_settings(server.url)) as client:
        outcomes = [await client.send(message()) for _ in range(20)]
    assert {o.verdict for o in outcomes} == {Verdict.DELIVERED}
    assert len(server.requests) == 20
    assert len(server.peers) == 1  # one TCP connection carried all 20 calls


async def test_connection_close_from_the_server_opens_a_new_one() -> None:
    def answer(n: int, head: bytes) -> bytes:
        return http_response(headers="Connection: close\r\n" if n % 2 else "")

    async with RawServer(answer) as server, TopClient(gateway_settings(server.url)) as client:
        outcomes = [await client.send(message()) for _ in range(6)]
    assert {o.verdict for o in outcomes} == {Verdict.DELIVERED}
    assert len(server.peers) == 4  # connections carried requests {1}, {2, 3}, {4, 5}, {6}


async def test_concurrent_calls_share_at_most_max_connections(sim: SimGateway) -> None:
    async with TopClient(gateway_settings(sim.url, max_connections=3)) as client:
        outcomes = await asyncio.gather(*(client.send(message()) for _ in range(60)))
        transport = client._transport
    assert {o.verdict for o in outcomes} == {Verdict.DELIVERED}
    assert isinstance(transport, HttpPool) and 1 <= transport.connections_opened <= 3


async def test_pool_wait_is_not_part_of_the_timeout(make_sim: SimFactory) -> None:
    """Issue 10: 2 connections, 10 calls in flight, 400 ms per call, 1 s timeout: the last calls wait 1.6 s for
    a connection, and none of them times out for it."""
    sim = await make_sim(Faults(latency_ms=400))
    started = time.perf_counter()
    async with TopClient(gateway_settings(sim.url, max_connections=2, timeout_seconds=1.0)) as client:
        outcomes = await asyncio.gather(*(client.send(message()) for _ in range(10)))
    elapsed = time.perf_counter() - started
    assert [o.verdict for o in outcomes] == [Verdict.DELIVERED] * 10, [o.describe() for o in outcomes]
    assert elapsed >= 5 * 0.4  # five rounds over two connections: they really waited
    assert max(o.latency_seconds for o in outcomes) > 1.0  # longer than the timeout, counted from the call


async def test_timeout_counts_from_the_connection_and_fails_only_that_call(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(hang_rate=1, hang_seconds=60))
    async with TopClient(gateway_settings(sim.url, max_connections=1, timeout_seconds=0.2)) as client:
        outcomes = await asyncio.gather(*(client.send(message()) for _ in range(3)))
    assert [o.detail for o in outcomes] == ["timeout: no response within 0.2s"] * 3
    assert sim.state.stats.hung == 3  # each call reached the gateway: none timed out waiting for the connection


async def test_cancelled_waiters_leave_the_pool_usable(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(latency_ms=100))
    async with TopClient(gateway_settings(sim.url, max_connections=1)) as client:
        tasks = [asyncio.create_task(client.send(message())) for _ in range(5)]
        while sim.state.stats.total_requests == 0:
            await asyncio.sleep(0.01)
        for task in tasks[1:4]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        after = await client.send(message())
    assert [type(d).__name__ for d in done[1:4]] == ["CancelledError"] * 3
    assert isinstance(done[0], Outcome) and done[0].verdict is Verdict.DELIVERED
    assert isinstance(done[4], Outcome) and done[4].verdict is Verdict.DELIVERED
    assert after.verdict is Verdict.DELIVERED


async def test_connect_failures_reach_every_waiting_call() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with TopClient(gateway_settings(f"http://127.0.0.1:{port}/router/rest", max_connections=1)) as client:
        outcomes = await asyncio.wait_for(asyncio.gather(*(client.send(message()) for _ in range(5))), 10)
    assert {o.verdict for o in outcomes} == {Verdict.RETRYABLE}
    assert all(
        o.detail is not None and o.detail.startswith(f"connect: cannot connect to 127.0.0.1:{port}") for o in outcomes
    )


async def test_close_fails_calls_in_flight_as_closed(make_sim: SimFactory) -> None:
    sim = await make_sim(Faults(hang_rate=1, hang_seconds=60))
    client = TopClient(gateway_settings(sim.url))
    await client.start()
    task = asyncio.create_task(client.send(message()))
    while sim.state.stats.hung == 0:
        await asyncio.sleep(0.01)
    await client.close()
    outcome = await task
    assert (outcome.verdict, outcome.detail) == (Verdict.RETRYABLE, "closed: client closed")


async def test_redirects_are_not_followed() -> None:
    async with RawServer(lambda n, head: http_response(b"", "302 Found", "Location: http://example.invalid/\r\n")) as s:
        outcome = await send_to(s.url)
    assert (outcome.verdict, outcome.http_status) == (Verdict.SYSTEMIC, 302)
    assert len(s.requests) == 1


async def test_proxy_environment_is_ignored_as_before(sim: SimGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The aiohttp session the pool replaced was created without trust_env: proxies from the environment
    were never used. A proxy variable pointing at a closed port changes nothing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    assert (await send_to(sim.url)).verdict is Verdict.DELIVERED


# --- TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server TLS context with a certificate for `names`, signed by the throwaway CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


@pytest.fixture
async def tls_sim(ca: trustme.CA) -> AsyncIterator[tuple[SimGateway, int]]:
    """The simulated gateway behind HTTPS with a certificate for 127.0.0.1 and localhost from a throwaway CA."""
    sim = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET)
    async with serve(sim.app, server_context(ca, "127.0.0.1", "localhost")) as url:
        yield sim, int(url.split(":")[2].split("/")[0])


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def test_tls_verified_with_the_ca(tls_sim: tuple[SimGateway, int], ca_file: Path) -> None:
    sim, port = tls_sim
    for host in ("127.0.0.1", "localhost"):
        outcome = await send_to(f"https://{host}:{port}/router/rest", ssl_cafile=ca_file)
        assert outcome.verdict is Verdict.DELIVERED, outcome.describe()
    assert sim.state.stats.accepted == 2


async def test_tls_refused_without_the_ca_is_systemic(tls_sim: tuple[SimGateway, int]) -> None:
    sim, port = tls_sim
    outcome = await send_to(f"https://127.0.0.1:{port}/router/rest")
    assert outcome.verdict is Verdict.SYSTEMIC
    assert outcome.detail is not None and outcome.detail.startswith("tls: certificate of 127.0.0.1 not trusted")
    assert sim.state.stats.total_requests == 0


async def test_tls_refused_for_another_host_name(ca: trustme.CA, ca_file: Path) -> None:
    """A certificate the CA signed, but for another name: refused too (host name verification is on)."""
    sim = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET)
    async with serve(sim.app, server_context(ca, "gateway.example")) as url:
        outcome = await send_to(url, ssl_cafile=ca_file)
    assert outcome.verdict is Verdict.SYSTEMIC
    assert outcome.detail is not None and "not trusted" in outcome.detail


async def test_tls_connections_are_reused(tls_sim: tuple[SimGateway, int], ca_file: Path) -> None:
    _sim, port = tls_sim
    async with TopClient(gateway_settings(f"https://127.0.0.1:{port}/router/rest", ssl_cafile=ca_file)) as client:
        outcomes = [await client.send(message()) for _ in range(5)]
        transport = client._transport
    assert {o.verdict for o in outcomes} == {Verdict.DELIVERED}
    assert isinstance(transport, HttpPool) and transport.connections_opened == 1


# --- no secret in any outcome text ------------------------------------------------------------------

SESSION = "s3cr3t-session-value"


def echo_url(n: int, head: bytes) -> bytes:
    """A front end that echoes the request line (with its query) in a non-JSON 200 page."""
    return http_response(b"<html>bad gateway for " + head.split(b"\r\n")[0] + b"</html>")


async def _outcome_refused(_: SimFactory) -> tuple[Outcome, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/router/rest"
    return await send_to(url, session=SESSION), ""


async def _outcome_sim(make_sim: SimFactory, faults: Faults, **settings: Any) -> tuple[Outcome, str]:
    sim = await make_sim(faults)
    return await send_to(sim.url, session=SESSION, **settings), ""


async def _outcome_raw(answer: Answer) -> tuple[Outcome, str]:
    async with RawServer(answer) as server:
        outcome = await send_to(server.url, session=SESSION)
    sign = re.search(rb"[?&]sign=([0-9A-F]+)", server.requests[0])
    return outcome, sign.group(1).decode() if sign else ""


SCENARIOS: dict[str, Callable[[SimFactory], Awaitable[tuple[Outcome, str]]]] = {
    "refused": _outcome_refused,
    "timeout": lambda ms: _outcome_sim(ms, Faults(hang_rate=1), timeout_seconds=0.2),
    "dropped": lambda ms: _outcome_sim(ms, Faults(drop_rate=1)),
    "http-413": lambda ms: _outcome_sim(ms, Faults(max_body_bytes=10)),
    "wrong-secret": lambda ms: _outcome_sim(ms, Faults(), app_secret="wrong-secret"),
    "echoed-url": lambda ms: _outcome_raw(echo_url),
    "malformed": lambda ms: _outcome_raw(lambda n, head: b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_outcome_texts_never_carry_the_query_string(make_sim: SimFactory, scenario: str) -> None:
    outcome, sign = await SCENARIOS[scenario](make_sim)
    assert outcome.verdict is not Verdict.DELIVERED
    text = outcome.describe()
    assert SESSION not in text and "session=" not in text and "sign=" not in text
    assert not sign or sign not in text
    assert "app_key=" not in text


# --- the same pool on uvloop (the daemon's loop: its transports call connection_made later) ----------------


def test_pool_on_uvloop(ca: trustme.CA, ca_file: Path) -> None:
    """Reuse, TLS verified and refused, a timeout, a pool wait and a cancellation, on uvloop."""
    import uvloop

    async def scenario() -> dict[str, Any]:
        sim = SimGateway(app_key=APP_KEY, app_secret=APP_SECRET, faults=Faults(latency_ms=50))
        async with serve(sim.app, server_context(ca, "127.0.0.1")) as url:
            async with TopClient(gateway_settings(url, ssl_cafile=ca_file, max_connections=2)) as client:
                sequential = [await client.send(message()) for _ in range(3)]
                opened_after_sequential = client._transport.connections_opened  # type: ignore[union-attr]
                concurrent = await asyncio.gather(*(client.send(message()) for _ in range(8)))
                cancelled = asyncio.create_task(client.send(message()))
                await asyncio.sleep(0.01)
                cancelled.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cancelled
                after_cancel = await client.send(message())
                sim.state.set_faults(Faults(hang_rate=1, hang_seconds=1))
            async with TopClient(gateway_settings(url, ssl_cafile=ca_file, timeout_seconds=0.2)) as client:
                timed_out = await client.send(message())
            untrusted = await send_to(url)
        return {
            "sequential": [o.verdict for o in sequential],
            "opened": opened_after_sequential,
            "concurrent": {o.verdict for o in concurrent},
            "after_cancel": after_cancel.verdict,
            "timeout": timed_out.detail,
            "untrusted": untrusted.verdict,
        }

    result = uvloop.run(scenario())
    assert result == {
        "sequential": [Verdict.DELIVERED] * 3,
        "opened": 1,
        "concurrent": {Verdict.DELIVERED},
        "after_cancel": Verdict.DELIVERED,
        "timeout": "timeout: no response within 0.2s",
        "untrusted": Verdict.SYSTEMIC,
    }
