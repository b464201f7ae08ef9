"""What the TopClient needs of an HTTP transport, and the two it can use.

    Transport            post(endpoint, query_tail, body) -> Response; raises TransportError, never anything else
    ├── HttpPool         the default: keep-alive HTTP/1.1 pool on asyncio protocols + httptools (bridge.gateway.http)
    └── AiohttpTransport an injected aiohttp.ClientSession (its connector, TLS and proxy settings apply)

Both translate their library's exceptions into a `TransportFailure` (kind + message) at this one boundary, and
no message ever quotes the request URL's query string (it carries `session` and `sign`).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from bridge.errors import GatewayError
from bridge.gateway.classify import TransportFailure, TransportKind

if TYPE_CHECKING:
    import aiohttp

_QUERY_RE: Final = re.compile(r"\?[^\s'\"<>]*")


def strip_query(text: str) -> str:
    """`text` with every URL query string (`?...` up to whitespace or a quote) cut to `?…`."""
    return _QUERY_RE.sub("?…", text) if "?" in text else text


class TransportError(GatewayError):
    """A call produced no HTTP response; `failure` says why (translated at the transport boundary)."""

    def __init__(self, failure: TransportFailure) -> None:
        super().__init__(f"{failure.kind.value}: {failure.message}")
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP response: status, body (decoded from gzip/deflate if it was), Retry-After if sent."""

    status: int
    body: bytes
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One URL the client posts to: `url` without the per-call query tail, and the body's content type."""

    url: str
    content_type: str


class Transport(Protocol):
    """Sends POSTs to the gateway's origin. `post` raises only TransportError (and CancelledError)."""

    async def start(self) -> None:
        """Prepare (bind to the running loop, build TLS state); no connection is opened yet."""
        ...

    async def close(self) -> None:
        """Close every connection; pending calls fail as `closed`. Idempotent."""
        ...

    async def post(self, endpoint: Endpoint, query_tail: str, body: bytes) -> Response:
        """POST `body` to `endpoint.url + query_tail`; the timeout covers the request on the wire."""
        ...


def tls_failure(exc: ssl.SSLError, host: str) -> TransportFailure:
    """A TLS handshake or certificate failure (configuration: the gateway cannot be trusted as set up)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportFailure(TransportKind.TLS, f"certificate of {host} not trusted: {exc.verify_message}")
    return TransportFailure(TransportKind.TLS, f"TLS with {host} failed: {exc.reason or exc}")


class AiohttpTransport:
    """Posts through an injected aiohttp session (not closed here). Its timeout is aiohttp's `total`, which also
    covers the wait for one of the session connector's pooled connections."""

    def __init__(self, session: aiohttp.ClientSession, timeout_seconds: float, user_agent: str) -> None:
        self._session = session
        self._timeout_seconds = timeout_seconds
        self._user_agent = user_agent

    async def start(self) -> None:
        """Nothing to prepare: the session is the caller's."""

    async def close(self) -> None:
        """The injected session stays open (its owner closes it)."""

    async def post(self, endpoint: Endpoint, query_tail: str, body: bytes) -> Response:
        """POST through the session; aiohttp's exceptions become TransportErrors."""
        import aiohttp
        from yarl import URL

        headers = {"Content-Type": endpoint.content_type, "User-Agent": self._user_agent}
        try:
            async with self._session.post(
                URL(endpoint.url + query_tail, encoded=True),
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                allow_redirects=False,
            ) as resp:
                return Response(resp.status, await resp.read(), resp.headers.get("Retry-After"))
        except Exception as exc:  # the aiohttp boundary: nothing escapes but TransportError
            raise TransportError(self._translate(exc)) from exc

    def _translate(self, exc: BaseException) -> TransportFailure:
        import aiohttp

        text = strip_query(str(exc) or type(exc).__name__)
        if isinstance(exc, TimeoutError):
            return TransportFailure(TransportKind.TIMEOUT, f"no response within {self._timeout_seconds:g}s")
        if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
            return TransportFailure(TransportKind.TLS, text)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return TransportFailure(TransportKind.CONNECT, text)
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
            return TransportFailure(TransportKind.DISCONNECTED, text)
        if isinstance(exc, aiohttp.InvalidURL):
            return TransportFailure(TransportKind.INVALID_URL, text)
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
            return TransportFailure(TransportKind.PROTOCOL, text)
        return TransportFailure(TransportKind.OTHER, f"{type(exc).__name__}: {text}")
