"""The status server (/metrics /healthz /readyz) bounds what a client can cost: connections, time, work.

Raw sockets, so each test controls exactly what a client sends and reads: a slowloris dribbling its headers,
a client that connects and says nothing, an idle keep-alive, one that never reads its response, a crowd
beyond the connection limit, scrapes inside the /metrics cache interval, and malformed requests. Every test
runs on asyncio's loop and on uvloop (the daemon's), whose transports must behave the same (conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.devstack import parse_metrics
from bridge.metrics import Metrics
from bridge.web import EVICT_AFTER_SECONDS, HttpLimits, StatusServer

READY: tuple[bool, dict[str, object]] = (True, {"partitions": 1})


class CountingCollector(Collector):
    """A collector that counts how often /metrics was rendered."""

    def __init__(self) -> None:
        self.renders = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.renders += 1
        yield GaugeMetricFamily("test_renders", "Renders so far.", value=self.renders)


def counting_registry() -> tuple[CountingCollector, CollectorRegistry]:
    """A registry whose renders are counted."""
    counting, registry = CountingCollector(), CollectorRegistry()
    registry.register(counting)
    return counting, registry


@asynccontextmanager
async def serving(limits: HttpLimits, registry: CollectorRegistry | None = None) -> AsyncIterator[StatusServer]:
    """A started status server on a free port, with its own Metrics (for the closed-connections counter)."""
    metrics = Metrics(registry or CollectorRegistry())
    metrics.prime([])
    server = StatusServer(metrics.registry, lambda: READY, "127.0.0.1:0", limits=limits, metrics=metrics)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def closed_count(server: StatusServer, reason: str) -> float:
    body = server.render_metrics()
    return parse_metrics(body.decode()).get(f'bridge_http_connections_closed_total{{reason="{reason}"}}', 0.0)


async def connect(server: StatusServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (reading and dropping whatever it sends)."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines if line)}
    length = int(headers["content-length"])
    body = await reader.readexactly(length) if length else b""
    return int(status_line.split()[1]), headers, body


GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
NO_CACHE = HttpLimits(cache_seconds=0)


# ------------------------------------------------------------------------------------------- slow clients
async def test_a_slowloris_is_closed_within_the_request_timeout() -> None:
    async with serving(HttpLimits(request_timeout_seconds=0.5)) as server:
        reader, writer = await connect(server)
        started = time.monotonic()

        async def dribble() -> None:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        dribbling = asyncio.create_task(dribble())
        try:
            await closed_after(reader, 3)
        finally:
            dribbling.cancel()
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed <= 1.5, elapsed  # the deadline, not the client's pace, closed it
        assert closed_count(server, "request_timeout") == 1
        assert server.connections == 0
        writer.close()


async def test_a_silent_connection_is_closed_within_the_request_timeout() -> None:
    async with serving(HttpLimits(request_timeout_seconds=0.3)) as server:
        reader, writer = await connect(server)
        assert 0.25 <= await closed_after(reader, 3) <= 1.3
        assert closed_count(server, "request_timeout") == 1
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    async with serving(HttpLimits(idle_timeout_seconds=0.4, request_timeout_seconds=5)) as server:
        reader, writer = await connect(server)
        writer.write(GET % b"/healthz")
        status, headers, body = await read_response(reader)
        assert (status, headers["connection"], body) == (200, "keep-alive", b'{"status":"ok"}')
        assert 0.35 <= await closed_after(reader, 3) <= 1.4
        assert closed_count(server, "idle_timeout") == 1
        writer.close()


@pytest.fixture
def big_registry() -> CollectorRegistry:
    """About 1.3 MB of metrics text: more than small socket buffers hold."""
    registry = CollectorRegistry()
    gauge = Gauge("test_big", "Many long series.", ["name"], registry=registry)
    for i in range(2500):
        gauge.labels(f"{i:05d}-" + "x" * 500).set(i)
    return registry


async def test_a_client_that_does_not_read_is_cut_off(big_registry: CollectorRegistry) -> None:
    async with serving(HttpLimits(request_timeout_seconds=0.5), big_registry) as server:
        assert server._socket is not None
        server._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # accepted ones inherit
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(GET % b"/metrics")
        await asyncio.sleep(1.2)  # reads nothing: the response stays stuck in the buffers
        assert closed_count(server, "write_timeout") == 1
        assert server.connections == 0
        received = 0
        try:
            while chunk := await reader.read(65536):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 1_000_000
        writer.close()


# ------------------------------------------------------------------------------------------- connection limit
async def test_beyond_the_limit_the_longest_waiting_connection_makes_room() -> None:
    """A probe arriving while idlers hold every slot waits in the backlog, then the oldest idler goes."""
    async with serving(HttpLimits(max_connections=3, request_timeout_seconds=10)) as server:
        silent = [await connect(server) for _ in range(3)]
        await wait_for(lambda: server.connections == 3)
        started = time.monotonic()
        reader, writer = await connect(server)  # the kernel completes the handshake; the server waits
        writer.write(GET % b"/healthz")
        status, headers, _ = await read_response(reader)
        waited = time.monotonic() - started
        assert status == 200
        assert headers["connection"] == "close"  # crowded: the slot is given back at once
        assert EVICT_AFTER_SECONDS * 0.8 <= waited <= EVICT_AFTER_SECONDS + 1, waited
        assert await closed_after(silent[0][0], 2) < 2  # the oldest one was evicted
        assert await closed_after(reader, 2) < 2
        assert server.connections == 2
        assert closed_count(server, "limit") == 1
        for _, w in [*silent, (reader, writer)]:
            w.close()


async def test_below_half_the_limit_connections_are_kept_alive() -> None:
    async with serving(HttpLimits(max_connections=4)) as server:
        first = await connect(server)
        first[1].write(GET % b"/healthz")
        assert (await read_response(first[0]))[1]["connection"] == "keep-alive"  # 1 of 4 slots
        second = await connect(server)
        second[1].write(GET % b"/healthz")
        assert (await read_response(second[0]))[1]["connection"] == "close"  # 2 of 4: crowded
        for _, w in (first, second):
            w.close()


async def test_beyond_the_limit_a_connection_waits_for_a_free_slot() -> None:
    async with serving(HttpLimits(max_connections=1)) as server:
        first_reader, first_writer = await connect(server)
        first_writer.write(GET % b"/healthz")
        await read_response(first_reader)
        second_reader, second_writer = await connect(server)
        second_writer.write(GET % b"/readyz")
        first_writer.close()  # frees the slot at once
        started = time.monotonic()
        status, _, _ = await read_response(second_reader)
        assert status == 200
        assert time.monotonic() - started < EVICT_AFTER_SECONDS
        assert closed_count(server, "limit") == 0
        second_writer.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------- /metrics cache
async def test_a_scrape_is_never_older_than_its_request() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("test_value", "A value the test changes.", registry=registry)
    async with serving(HttpLimits(cache_seconds=0.2), registry) as server:
        reader, writer = await connect(server)
        for value in range(1, 6):
            gauge.set(value)  # changed just before asking, right after the previous answer
            writer.write(GET % b"/metrics")
            assert parse_metrics((await read_response(reader))[2].decode())["test_value"] == value
        writer.close()


async def test_a_fast_scraper_waits_for_the_next_render_instead_of_costing_one() -> None:
    counting, registry = counting_registry()
    async with serving(HttpLimits(cache_seconds=0.2), registry) as server:
        reader, writer = await connect(server)
        started = time.monotonic()
        for _ in range(6):
            writer.write(GET % b"/metrics")
            await read_response(reader)
        assert counting.renders == 6
        assert time.monotonic() - started >= 5 * 0.2 * 0.9  # one render per interval, however fast it asks
        writer.close()


async def test_concurrent_scrapes_share_one_render() -> None:
    counting, registry = counting_registry()
    async with serving(HttpLimits(cache_seconds=0.2, max_connections=100), registry) as server:
        clients = [await connect(server) for _ in range(30)]
        for _, writer in clients:
            writer.write(GET % b"/metrics")
        bodies = {(await read_response(reader))[2] for reader, _ in clients}
        assert counting.renders <= 2  # the first may be rendered before the last request arrived
        assert len(bodies) == counting.renders
        for _, writer in clients:
            writer.close()


async def test_with_a_crowd_scrapes_are_answered_at_once_from_a_recent_render() -> None:
    counting, registry = counting_registry()
    async with serving(HttpLimits(cache_seconds=30, max_connections=4), registry) as server:
        idlers = [await connect(server) for _ in range(2)]
        await wait_for(lambda: server.connections == 2)
        started = time.monotonic()
        for _ in range(10):  # each answer closes its connection (crowded): a new one each time
            reader, writer = await connect(server)
            writer.write(GET % b"/metrics")
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (200, "close")
            writer.close()
        assert time.monotonic() - started < 5
        assert counting.renders == 1
        for _, writer in idlers:
            writer.close()


# ------------------------------------------------------------------------------------------- HTTP details
@pytest.mark.parametrize(
    ("request_bytes", "status", "closes"),
    [
        (GET % b"/readyz", 200, False),
        (GET % b"/healthz?verbose=1", 200, False),
        (GET % b"/nope", 404, False),
        (b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405, False),
        (b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 413, True),
        (b"GET /healthz HTTP/1.0\r\n\r\n", 200, True),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, True),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", 413, True),
    ],
    ids=["readyz", "query", "404", "post", "body", "http10", "garbage", "huge"],
)
async def test_requests(request_bytes: bytes, status: int, closes: bool) -> None:
    async with serving(NO_CACHE) as server:
        reader, writer = await connect(server)
        writer.write(request_bytes)
        got, headers, _ = await read_response(reader)
        assert got == status
        assert headers["connection"] == ("close" if closes else "keep-alive")
        if closes:
            assert await closed_after(reader, 2) < 2
        writer.close()


async def test_head_and_pipelined_requests() -> None:
    async with serving(NO_CACHE) as server:
        reader, writer = await connect(server)
        writer.write(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/readyz" + GET % b"/healthz")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: 15\r\n" in head  # the length of the body a GET would get, none sent
        second = await read_response(reader)
        third = await read_response(reader)
        assert (second[0], second[2]) == (200, b'{"ready":true,"partitions":1}')
        assert (third[0], third[2]) == (200, b'{"status":"ok"}')
        writer.close()


async def test_listen_errors_name_the_address() -> None:
    from bridge.web import ListenError

    async with serving(NO_CACHE) as server:
        other = StatusServer(CollectorRegistry(), lambda: READY, f"127.0.0.1:{server.port}")
        with pytest.raises(ListenError, match=rf"cannot listen on 127.0.0.1:{server.port} \(metrics.listen\)"):
            await other.start()
