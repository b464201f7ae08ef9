"""HttpPool: a small keep-alive HTTP/1.1 client for one origin, on asyncio protocols with httptools parsing.

It does what the TopClient needs and nothing else, at a fraction of aiohttp's CPU per call:
- up to `max_connections` persistent connections, reused most-recently-used first; idle ones older than
  `KEEPALIVE_SECONDS` are closed instead of reused; one request at a time per connection (no pipelining);
- callers beyond `max_connections` wait for a free connection, and that wait is NOT part of the timeout:
  the timeout covers the request on the wire (connect + TLS + request + response) and starts when the call
  gets its connection;
- timeouts without a timer per call: each busy connection carries a deadline and one sweeper per pool,
  running only while calls are in flight, fails the overdue ones every `timeout / 10` (at most 100 ms);
- TLS with certificate and host name verification (`ssl.create_default_context`, system CAs or `cafile`);
- no proxy: like the aiohttp session it replaces (created without `trust_env`), HTTP(S)_PROXY are ignored;
- redirects are not followed (a 3xx is returned as is); gzip/deflate response bodies are decoded;
- every failure is a `TransportError(TransportFailure)` naming host:port only, never the URL's query.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import zlib
from collections import deque
from pathlib import Path
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from bridge.gateway.classify import TransportFailure, TransportKind
from bridge.gateway.transport import Endpoint, Response, TransportError, tls_failure

KEEPALIVE_SECONDS: Final = 15.0  # an idle connection older than this is closed, not reused (aiohttp's default)
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
_CLOSE_WAIT_SECONDS: Final = 2.0
_FRAMING_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: writes a request, parses its response, resolves the caller's future."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.deadline = 0.0
        self.idle_since = 0.0
        self.closed = False
        self._status = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._framed = False
        self._encoding: bytes | None = None
        self._retry_after: str | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._pool._all.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            msg = f"malformed HTTP response from {self._pool.origin}: {exc}"
            self.fail(TransportFailure(TransportKind.PROTOCOL, msg))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles a pending call

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None:
            if self._status >= 200 and not self._framed:
                self._complete(keep_alive=False)  # a body delimited by the end of the connection
            else:
                what = "before a complete response" if self._status else "before a response"
                reason = f": {exc}" if exc is not None else ""
                self._settle_error(TransportFailure(TransportKind.DISCONNECTED, f"connection closed {what}{reason}"))
        self._pool._lost(self)

    # --- httptools callbacks ------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n in _FRAMING_HEADERS:
            self._framed = True
        elif n == b"content-encoding":
            self._encoding = value.strip().lower()
        elif n == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            msg = f"response from {self._pool.origin} larger than {MAX_RESPONSE_BYTES} bytes"
            self.fail(TransportFailure(TransportKind.PROTOCOL, msg))
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # an interim 1xx response: the real one follows
            self._reset()
            return
        self._complete(keep_alive=self._parser.should_keep_alive())

    # --- the pool's side ----------------------------------------------------------------------------
    def send(self, data: bytes, waiter: asyncio.Future[Response], deadline: float) -> None:
        """Write one request; `waiter` gets its Response or a TransportError."""
        assert self.transport is not None
        self.waiter = waiter
        self.deadline = deadline
        self.transport.write(data)

    def fail(self, failure: TransportFailure) -> None:
        """Fail the pending call (if any) and abort the connection: it cannot be reused."""
        self._settle_error(failure)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once (its response, if one comes, would belong to nobody)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close the connection gracefully (TLS close_notify)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _reset(self) -> None:
        self._status = 0
        self._chunks = []
        self._size = 0
        self._framed = False
        self._encoding = None
        self._retry_after = None

    def _settle_error(self, failure: TransportFailure) -> None:
        waiter, self.waiter = self.waiter, None
        self._pool._busy.discard(self)
        if waiter is not None and not waiter.done():
            waiter.set_exception(TransportError(failure))

    def _complete(self, *, keep_alive: bool) -> None:
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status, encoding, retry_after = self._status, self._encoding, self._retry_after
        self._reset()
        if encoding is not None and encoding != b"identity":
            try:
                body = zlib.decompress(body, 47 if encoding in (b"gzip", b"x-gzip") else 15)
            except zlib.error:
                msg = f"response from {self._pool.origin} not decodable as {encoding.decode('latin-1')}"
                self.fail(TransportFailure(TransportKind.PROTOCOL, msg))
                return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, body, retry_after))
        self._pool._release(self, keep_alive=keep_alive and waiter is not None)


class HttpPool:
    """Keep-alive HTTP/1.1 connections to the origin of `url`. No I/O in the constructor; `start()` in a loop."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        timeout_seconds: float,
        user_agent: str,
        cafile: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an absolute http(s) URL, got a {parts.scheme or 'relative'} one")
        self._tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self._tls else 80)
        self.origin = f"{parts.hostname}:{self.port}"
        host_header = parts.netloc.rpartition("@")[2]
        self._static_headers = f"Host: {host_header}\r\nUser-Agent: {user_agent}\r\n"
        self._origin_prefix = f"{parts.scheme}://{parts.netloc}"
        self._max = max_connections
        self._timeout = timeout_seconds
        self._tick = max(0.005, min(0.1, timeout_seconds / 10))
        self._cafile = cafile
        self._ssl: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._all: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._open = 0  # connections open or being opened
        self._sweeper: asyncio.TimerHandle | None = None
        self._heads: dict[str, tuple[bytes, bytes]] = {}
        self._closed = False
        self._all_gone: asyncio.Future[None] | None = None
        self.connections_opened = 0  # lifetime count (tests check connection reuse with it)

    async def start(self) -> None:
        """Bind to the running loop and build the TLS context (system CAs, or `cafile`)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self._tls:
                self._ssl = ssl.create_default_context(cafile=str(self._cafile) if self._cafile else None)

    async def close(self) -> None:
        """Close all connections (waiting up to 2 s for them to go); pending calls fail as `closed`."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        closed = TransportFailure(TransportKind.CLOSED, "client closed")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TransportError(closed))
        for conn in list(self._all):
            conn._settle_error(closed)
            conn.close()
        if self._open and self._loop is not None:
            self._all_gone = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_gone), _CLOSE_WAIT_SECONDS)
            except TimeoutError:
                for conn in list(self._all):
                    conn.abort()

    # --- the call ---------------------------------------------------------------------------------
    def _head(self, endpoint: Endpoint) -> tuple[bytes, bytes]:
        """(`POST <path>?<static query>`, ` HTTP/1.1` + headers up to `Content-Length: `), built once."""
        cached = self._heads.get(endpoint.url)
        if cached is None:
            if not endpoint.url.startswith(self._origin_prefix):
                raise ValueError("an endpoint of another origin than the pool's")
            target = endpoint.url[len(self._origin_prefix) :] or "/"
            headers = f"{self._static_headers}Content-Type: {endpoint.content_type}\r\nContent-Length: "
            cached = (f"POST {target}".encode("ascii"), f" HTTP/1.1\r\n{headers}".encode("ascii"))
            self._heads[endpoint.url] = cached
        return cached

    async def post(self, endpoint: Endpoint, query_tail: str, body: bytes) -> Response:
        """POST `body`; the timeout starts when the call has its connection (connect included)."""
        start, rest = self._head(endpoint)
        conn, started = await self._acquire()
        loop = self._loop
        assert loop is not None
        waiter: asyncio.Future[Response] = loop.create_future()
        data = b"".join((start, query_tail.encode("ascii"), rest, b"%d\r\n\r\n" % len(body), body))
        conn.send(data, waiter, started + self._timeout)
        self._busy.add(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(loop.time() + self._tick, self._sweep)
        try:
            return await waiter
        except asyncio.CancelledError:
            if conn.waiter is waiter:  # still in flight: its answer would belong to nobody
                conn.waiter = None
                self._busy.discard(conn)
                conn.abort()
            raise

    async def _acquire(self) -> tuple[_Connection, float]:
        """A connection for one call, and the loop time its timeout counts from."""
        if self._closed:
            raise TransportError(TransportFailure(TransportKind.CLOSED, "client closed"))
        loop = self._loop
        if loop is None:
            await self.start()
            loop = self._loop
            assert loop is not None
        while True:
            now = loop.time()
            idle = self._idle
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if now - conn.idle_since > KEEPALIVE_SECONDS:
                    conn.close()
                    continue
                return conn, now
            if self._open < self._max:
                return await self._connect(), now
            waiter: asyncio.Future[_Connection | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                conn_or_slot = await waiter
            except asyncio.CancelledError:
                self._give_back(waiter)
                raise
            if conn_or_slot is not None:
                return conn_or_slot, loop.time()
            # None: a connection went away, so this caller may open one (next loop turn)

    def _give_back(self, waiter: asyncio.Future[_Connection | None]) -> None:
        """A caller waiting for a connection was cancelled: pass on what it was handed, or leave the queue."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            conn = waiter.result()
            if conn is not None:
                self._release(conn, keep_alive=True)
            else:
                self._wake_one(None)
        else:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        loop = self._loop
        assert loop is not None
        self._open += 1
        try:
            async with asyncio.timeout(self._timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except BaseException as exc:
            self._open -= 1
            self._wake_one(None)
            if isinstance(exc, Exception):
                raise TransportError(self._connect_failure(exc)) from exc
            raise
        # uvloop may return before it has called connection_made (it is scheduled with call_soon)
        conn.transport = transport
        self._all.add(conn)
        self.connections_opened += 1
        if self._closed:
            conn.close()
            raise TransportError(TransportFailure(TransportKind.CLOSED, "client closed"))
        if conn.closed:  # the server hung up before this call could use it (its slot is already freed)
            raise TransportError(TransportFailure(TransportKind.DISCONNECTED, f"{self.origin} closed at once"))
        return conn

    def _connect_failure(self, exc: Exception) -> TransportFailure:
        if isinstance(exc, TimeoutError):
            return TransportFailure(TransportKind.TIMEOUT, f"no connection to {self.origin} within {self._timeout:g}s")
        if isinstance(exc, ssl.SSLError):
            return tls_failure(exc, self.host)
        if isinstance(exc, socket.gaierror):
            return TransportFailure(TransportKind.CONNECT, f"cannot resolve {self.host}: {exc.strerror or exc}")
        if isinstance(exc, OSError):
            return TransportFailure(TransportKind.CONNECT, f"cannot connect to {self.origin}: {exc.strerror or exc}")
        return TransportFailure(TransportKind.OTHER, f"connecting to {self.origin}: {type(exc).__name__}: {exc}")

    # --- the connections' side ----------------------------------------------------------------------
    def _release(self, conn: _Connection, *, keep_alive: bool) -> None:
        """A call finished on `conn`: hand the connection to a waiting caller, keep it idle, or close it."""
        self._busy.discard(conn)
        if not keep_alive or conn.closed or self._closed:
            conn.close()  # connection_lost -> _lost frees the slot
            return
        if self._wake_one(conn):
            return
        assert self._loop is not None
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def _wake_one(self, conn: _Connection | None) -> bool:
        """Give `conn` (or, with None, the right to open one) to the first caller still waiting."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _lost(self, conn: _Connection) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._open -= 1
        if self._all_gone is not None and not self._open and not self._all_gone.done():
            self._all_gone.set_result(None)
        self._wake_one(None)

    def _sweep(self) -> None:
        """Fail the calls past their deadline; runs every `_tick` seconds while calls are in flight."""
        self._sweeper = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        overdue = [conn for conn in self._busy if conn.deadline <= now]
        if overdue:
            failure = TransportFailure(TransportKind.TIMEOUT, f"no response within {self._timeout:g}s")
            for conn in overdue:
                conn.fail(failure)
        if self._busy and not self._closed:
            self._sweeper = loop.call_at(now + self._tick, self._sweep)
