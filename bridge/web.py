"""The daemon's HTTP endpoints: /metrics (Prometheus text), /healthz (loop alive), /readyz (can deliver).

They share the event loop with delivery, so they are served by a deliberately small HTTP/1.1 server (an
asyncio protocol and the httptools parser) that no client can make expensive:
- at most `max_connections` connections: beyond that, new ones wait in the kernel's backlog until one closes,
  or until the connection that has waited longest for its request (idle keep-alive, or still sending it)
  has waited `EVICT_AFTER_SECONDS`: it is closed to make room (so a health probe never waits behind idlers);
  with half the slots taken, every response closes its connection, so slots turn over behind a crowd;
- a request must arrive complete within `request_timeout_seconds` of its first byte (of the connection, for
  the first request), an idle keep-alive connection is closed after `idle_timeout_seconds`, and a client
  that does not read its response within `request_timeout_seconds` is cut off (slowloris, slow readers);
- /metrics is rendered at most once per `cache_seconds`: scrapes are answered in batches, each by one render
  made after all its requests arrived (no answer is older than its request; a scraper asking faster waits
  for the next render instead of costing one); with a crowd, at once from a render at most that old;
- GET and HEAD only, no request bodies, a request of at most `MAX_REQUEST_BYTES`, a few pipelined requests.
aiohttp's server has no connection limit, no request-head deadline of its own and no write deadline.
The endpoints read nothing but the registry and the readiness callback: no I/O of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.metrics import Metrics
    from bridge.settings import MetricsSettings

Readiness = Callable[[], tuple[bool, dict[str, object]]]

HEARTBEAT_SECONDS = 1.0
STALL_SECONDS = 10.0
MAX_REQUEST_BYTES = 16_384  # request line, headers and any body together
MAX_PIPELINED = 8  # responses queued for a client that is not reading, before it is cut off
BACKLOG = 4096  # a crowd waits in the kernel, its SYNs not dropped (retried after 1 s); capped by somaxconn
EVICT_AFTER_SECONDS = 0.5  # when full, a connection waiting this long for its request makes room

log = logging.getLogger("bridge.web")

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed", 413: b"Too Large"}


class ListenError(BridgeError):
    """The status server cannot listen on its address (in use, not local, no permission)."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How much the endpoints may cost; see the module docstring."""

    max_connections: int = 100
    request_timeout_seconds: float = 5.0
    idle_timeout_seconds: float = 60.0
    cache_seconds: float = 0.25

    @classmethod
    def from_settings(cls, settings: MetricsSettings) -> HttpLimits:
        """The limits of the `metrics` config section."""
        return cls(
            max_connections=settings.max_connections,
            request_timeout_seconds=settings.request_timeout_seconds,
            idle_timeout_seconds=settings.idle_timeout_seconds,
            cache_seconds=settings.cache_seconds,
        )


class StatusServer:
    """Serves the endpoints on the daemon's own event loop."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        listen: str,
        *,
        limits: HttpLimits | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._listen = listen
        host, _, port = listen.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self.limits = limits or HttpLimits()
        self._metrics = metrics
        self._clock = clock
        self._socket: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._connections: dict[_Connection, None] = {}
        self._slot_freed = asyncio.Event()
        self._beat = clock()
        self._beat_task: asyncio.Task[None] | None = None
        self._metrics_waiting: dict[_Connection, None] = {}
        self._metrics_body: bytes | None = None
        self._metrics_at = float("-inf")  # loop time of the last render
        self._render_handle: asyncio.TimerHandle | None = None
        self.port: int | None = None

    @property
    def connections(self) -> int:
        """Open connections now."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind and serve; `port` holds the bound port (useful with port 0). ListenError if it cannot bind."""
        try:
            self._socket = _listening_socket(self._host, self._port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {self._listen} (metrics.listen): {reason}") from exc
        self.port = int(self._socket.getsockname()[1])
        self._beat = self._clock()
        self._beat_task = asyncio.create_task(self._heartbeat(), name="status-heartbeat")
        self._accept_task = asyncio.create_task(self._accept(self._socket), name="status-accept")

    async def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        for task in (self._beat_task, self._accept_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._beat_task = self._accept_task = None
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
        if self._render_handle is not None:
            self._render_handle.cancel()
            self._render_handle = None
        for conn in list(self._connections):
            conn.abort()

    async def _heartbeat(self) -> None:
        while True:
            self._beat = self._clock()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # ------------------------------------------------------------------ connections
    async def _accept(self, sock: socket.socket) -> None:
        """Accept one connection at a time, and serve it once there is room for it; meanwhile the others
        wait in the kernel's backlog (as with nginx or HAProxy at their limit)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _address = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: wait instead of spinning
                log.warning("status server cannot accept: %s", exc.strerror or exc)
                await asyncio.sleep(1)
                continue
            try:
                await self._room(loop)  # only someone waiting to be served evicts an idler
                await loop.connect_accepted_socket(lambda: _Connection(self), client)
            except OSError:
                client.close()
            except BaseException:  # stopping
                client.close()
                raise

    async def _room(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until a new connection fits: below the limit, or after evicting the connection that has waited
        longest for a request (idle keep-alive or still sending it), once it waited `EVICT_AFTER_SECONDS`."""
        while len(self._connections) >= self.limits.max_connections:
            waiting = [c for c in self._connections if not c.busy]
            oldest = min(waiting, key=lambda c: c.waiting_since, default=None)
            if oldest is not None and loop.time() - oldest.waiting_since >= EVICT_AFTER_SECONDS:
                self.forget(oldest)
                oldest.abort()
                self.closed("limit")
                return
            self._slot_freed.clear()
            wait = EVICT_AFTER_SECONDS if oldest is None else oldest.waiting_since + EVICT_AFTER_SECONDS - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), max(wait, 0.01))

    @property
    def crowded(self) -> bool:
        """Half the connection slots or more are taken: connections are closed after one response."""
        return 2 * len(self._connections) >= self.limits.max_connections

    def admit(self, conn: _Connection) -> None:
        """A new connection is open."""
        self._connections[conn] = None

    def forget(self, conn: _Connection) -> None:
        """A connection is gone (or going)."""
        self._metrics_waiting.pop(conn, None)
        if self._connections.pop(conn, 0) is None:
            self._slot_freed.set()

    def closed(self, reason: str) -> None:
        """Count a connection the server closed on its own (limit, timeouts, bad requests)."""
        if self._metrics is not None:
            self._metrics.http_connections_closed.labels(reason).inc()

    # ------------------------------------------------------------------ endpoints
    def respond(self, method: bytes, path: bytes) -> tuple[int, bytes, bytes] | None:
        """(status, content type, body) of one request; None for a /metrics scrape (see `want_metrics`)."""
        if method not in (b"GET", b"HEAD"):
            return 405, _TEXT, b"only GET and HEAD\n"
        if path == b"/metrics":
            return None
        if path == b"/healthz":
            stalled = self._clock() - self._beat
            if stalled > STALL_SECONDS:
                return 503, _JSON, orjson.dumps({"status": "stalled", "event_loop_lag_seconds": round(stalled, 1)})
            return 200, _JSON, b'{"status":"ok"}'
        if path == b"/readyz":
            ok, detail = self._readiness()
            return (200 if ok else 503), _JSON, orjson.dumps({"ready": ok, **detail})
        return 404, _TEXT, b"not found: try /metrics, /healthz or /readyz\n"

    def want_metrics(self, conn: _Connection) -> None:
        """`conn` waits for /metrics: answered by the next render, at most one per `cache_seconds`."""
        self._metrics_waiting[conn] = None
        if self._render_handle is None:
            loop = asyncio.get_running_loop()
            when = max(loop.time(), self._metrics_at + self.limits.cache_seconds)
            self._render_handle = loop.call_at(when, self._render_for_waiting)

    def render_metrics(self) -> bytes:
        """The metrics text now (readiness refreshed first, so `bridge_ready` is current)."""
        self._readiness()  # refreshes bridge_ready, so a scrape sees readiness without a /readyz prober
        return generate_latest(self._registry)

    def crowd_metrics(self) -> bytes | None:
        """With a crowd (see `crowded`), /metrics is answered at once from the last render while it is younger
        than `cache_seconds` (a new render otherwise): slots turn over fast. None without a crowd."""
        if not self.crowded:
            return None
        now = asyncio.get_running_loop().time()
        if self._metrics_body is None or now - self._metrics_at >= self.limits.cache_seconds:
            self._metrics_body, self._metrics_at = self.render_metrics(), now
        return self._metrics_body

    def _render_for_waiting(self) -> None:
        self._render_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._metrics_at + self.limits.cache_seconds:  # a crowd's render came in between
            self._render_handle = loop.call_at(self._metrics_at + self.limits.cache_seconds, self._render_for_waiting)
            return
        waiting, self._metrics_waiting = self._metrics_waiting, {}
        if waiting:
            body = self._metrics_body = self.render_metrics()
            self._metrics_at = now
            for conn in waiting:
                conn.metrics_ready(body)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket (IPv4 or IPv6, as the host says; all interfaces when empty)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them in order, enforce the deadlines."""

    def __init__(self, server: StatusServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_reason = "request_timeout"
        self._url = b""
        self._received = 0  # bytes of the current request
        self._has_body = False
        # Answers in request order: [status, content type, body (None: waiting for /metrics), head only, close]
        self._answers: deque[list[Any]] = deque()
        self._writing = False  # the transport holds unsent bytes: the client is not reading (yet)
        self._closing = False  # the last answer said `Connection: close`
        self._failed = False  # a bad request: its answer is queued, nothing more is read
        self.waiting_since = 0.0

    @property
    def busy(self) -> bool:
        """Answering (waiting for /metrics, or the client has not taken the answer yet): not evictable."""
        return bool(self._answers) or self._writing

    # --------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._transport = transport
        self._server.admit(self)
        transport.set_write_buffer_limits(high=0)  # pause_writing/resume_writing tell when it is all sent
        self.waiting_since = self._loop.time()
        self._arm(self._limits.request_timeout_seconds, "request_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._server.forget(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return
        self._received += len(data)  # since the last complete request: bounds what the parser buffers
        if self._received > MAX_REQUEST_BYTES:
            self._fail(413, b"request too large\n")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"no upgrades\n")
        except httptools.HttpParserError:
            self._fail(400, b"bad request\n")

    def pause_writing(self) -> None:
        self._writing = True

    def resume_writing(self) -> None:
        self._writing = False
        self._flush()

    # --------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._has_body = False
        if self._timeout_reason == "idle_timeout":  # the first request's deadline runs from the connection
            self._arm(self._limits.request_timeout_seconds, "request_timeout")

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._has_body = True

    def on_message_complete(self) -> None:
        if self._transport is None or self._transport.is_closing() or self._closing or self._failed:
            return
        self._received = 0
        if self._has_body:
            self._fail(413, b"no request bodies\n")
            return
        method = self._parser.get_method()
        try:
            path = httptools.parse_url(self._url).path or b""
        except httptools.HttpParserInvalidURLError:
            self._fail(400, b"bad url\n")
            return
        if len(self._answers) >= MAX_PIPELINED:  # a client asking and asking without reading
            self._server.closed("write_timeout")
            self.abort()
            return
        # Under pressure (half the slots taken) every answer closes its connection: slots turn over at once,
        # so a probe waiting in the backlog behind a crowd of keep-alive scrapers gets its turn.
        close = not self._parser.should_keep_alive() or self._server.crowded
        answer = self._server.respond(method, path)
        head_only = method == b"HEAD"
        if answer is None:
            body = self._server.crowd_metrics()
            self._answers.append([200, CONTENT_TYPE_LATEST.encode(), body, head_only, close])
            if body is None:
                self._server.want_metrics(self)
        else:
            self._answers.append([*answer, head_only, close])
        self._disarm()  # until it is answered: the answer's own deadline is armed when it is written
        self._flush()

    def metrics_ready(self, body: bytes) -> None:
        """The /metrics text this connection's waiting answers get."""
        for answer in self._answers:
            if answer[2] is None:
                answer[2] = body
        self._flush()

    # --------------------------------------------------------- helpers
    def _flush(self) -> None:
        """Write the answers that are ready, in order; then wait for the next request, or close."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        while self._answers and self._answers[0][2] is not None and not self._closing:
            status, content_type, body, head_only, close = self._answers.popleft()
            self._write(status, content_type, b"" if head_only else body, len(body), close)
            self._closing = close
        if self._writing or self._answers:
            transport.pause_reading()  # no more requests until these are answered and taken
            if self._writing:
                self._arm(self._limits.request_timeout_seconds, "write_timeout")
            return
        if self._closing:
            self._disarm()
            transport.close()
            return
        transport.resume_reading()
        self.waiting_since = self._loop.time()
        self._arm(self._limits.idle_timeout_seconds, "idle_timeout")

    def _write(self, status: int, content_type: bytes, body: bytes, length: int, close: bool) -> None:
        assert self._transport is not None
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
            status,
            _REASONS.get(status, b"Service Unavailable"),
            content_type,
            length,
            b"close" if close else b"keep-alive",
        )
        if len(body) < 65_536:
            self._transport.write(head + body)
        else:
            self._transport.write(head)
            self._transport.write(body)

    def _fail(self, status: int, body: bytes) -> None:
        """Answer a bad request and close (the rest of its bytes cannot be trusted)."""
        if self._transport is None or self._transport.is_closing() or self._closing or self._failed:
            return
        self._failed = True
        self._server.closed("bad_request")
        self._answers.append([status, _TEXT, body, False, True])
        self._flush()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timeout_reason = reason
        self._timer = self._loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._server.closed(self._timeout_reason)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now (no goodbye: the client was too slow, or a newer one needs the slot)."""
        self._disarm()
        if self._transport is not None:
            self._transport.abort()
