"""TopClient: signs one MobileReceiverMessageEvent, POSTs it to the TOP gateway and returns its Outcome.

The request is shaped like the official SDKs': system parameters and `sign` in the query string, the business
parameter `mobile_receiver_message_event` (compact JSON) form-encoded in the body; the signature covers both.
Everything that does not change between calls (static query, keyed hash state, headers, timeout) is built
once; per call the client formats the GMT+8 timestamp (cached per second), signs, and sends pre-encoded bytes
over one pooled aiohttp session.

This module is the boundary for aiohttp: its exceptions are translated here into `TransportFailure`s and
then into Outcomes by `bridge.gateway.classify`. `send()` never raises, except `asyncio.CancelledError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self
from urllib.parse import quote_plus

import aiohttp
import orjson
from yarl import URL

from bridge import __version__
from bridge.gateway.classify import TransportFailure, TransportKind, classify
from bridge.gateway.protocol import (
    API_VERSION,
    BUSINESS_PARAM,
    FORM_CONTENT_TYPE,
    FORMAT,
    METHOD,
    format_timestamp,
)
from bridge.gateway.sign import CanonicalTemplate, Signer
from bridge.models import MobileReceiverMessageEvent, Outcome, Verdict
from bridge.settings import GatewaySettings

USER_AGENT: Final = f"campus-bridge/{__version__}"
_BODY_PREFIX: Final = f"{BUSINESS_PARAM}=".encode("ascii")


def form_quote(value: str) -> str:
    """x-www-form-urlencoded quoting of one value (space as `+`; `+ & = % #` and non-ASCII escaped).

    Uses yarl's C quoter through its public API: about 7x cheaper than `quote_plus` for a 300-byte JSON
    value, deterministic, and decoded back to the same text by any form decoder (tested).
    """
    return URL.build(query={"v": value}).raw_query_string[2:]


def system_params(settings: GatewaySettings) -> dict[str, str]:
    """The static system parameters (all but `timestamp` and `sign`); empty values are left out."""
    params = {
        "method": METHOD,
        "app_key": settings.app_key,
        "v": API_VERSION,
        "format": FORMAT,
        "sign_method": settings.sign_method,
    }
    if settings.session is not None and settings.session.get_secret_value():
        params["session"] = settings.session.get_secret_value()
    if settings.partner_id:
        params["partner_id"] = settings.partner_id
    if settings.simplify:
        params["simplify"] = "true"
    return params


def translate_error(exc: BaseException, timeout_seconds: float) -> TransportFailure:
    """Map an aiohttp/OS exception raised by a call to a TransportFailure (the aiohttp boundary)."""
    if isinstance(exc, TimeoutError):
        return TransportFailure(TransportKind.TIMEOUT, f"no response within {timeout_seconds:g}s")
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return TransportFailure(TransportKind.TLS, str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportFailure(TransportKind.CONNECT, str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
        return TransportFailure(TransportKind.DISCONNECTED, str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.InvalidURL):
        return TransportFailure(TransportKind.INVALID_URL, str(exc))
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return TransportFailure(TransportKind.PROTOCOL, str(exc) or type(exc).__name__)
    return TransportFailure(TransportKind.OTHER, f"{type(exc).__name__}: {exc}")


class TopClient:
    """Sends messages to `alibaba.campus.mc.message.sendmessagetomobile`; one pooled session per client.

    No I/O in the constructor. `start()` opens the session (a first `send()` does it too), `close()` is
    idempotent and closes only a session the client created. Use as `async with TopClient(...) as client:`.
    `clock` returns Unix epoch seconds (default `time.time`) and only feeds the `timestamp` parameter.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or time.time
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._signer = Signer(settings.secret(), settings.sign_method)
        self._static = system_params(settings)
        self._template = CanonicalTemplate(self._static, ("timestamp", BUSINESS_PARAM))
        sep = "&" if "?" in settings.url else "?"
        self._url_prefix = settings.url + sep + "&".join(f"{k}={quote_plus(v)}" for k, v in self._static.items())
        self._timeout_seconds = settings.timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        self._headers = {"Content-Type": FORM_CONTENT_TYPE, "User-Agent": USER_AGENT}
        self._ts_second = -1
        self._ts_text = ""
        self._ts_quoted = ""

    async def start(self) -> None:
        """Open the pooled session (TCPConnector(limit=max_connections)) unless one was given."""
        if self._session is None and not self._closed:
            connector = aiohttp.TCPConnector(limit=self._settings.max_connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        """Close the session if this client created it. Safe to call more than once."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _timestamp(self) -> str:
        now = int(self._clock())
        if now != self._ts_second:
            self._ts_second = now
            self._ts_text = format_timestamp(now)
            self._ts_quoted = quote_plus(self._ts_text)
        return self._ts_text

    def encode(self, message: MobileReceiverMessageEvent) -> tuple[str, bytes]:
        """The signed request for `message`: the full URL with its query string, and the body bytes."""
        event = message.to_json().decode("utf-8")
        signature = self._signer.sign_canonical(self._template.render(self._timestamp(), event))
        url = f"{self._url_prefix}&timestamp={self._ts_quoted}&sign={signature}"
        return url, _BODY_PREFIX + form_quote(event).encode("ascii")

    async def send(self, message: MobileReceiverMessageEvent) -> Outcome:
        """Send one message and classify the result. Never raises, except asyncio.CancelledError."""
        start = time.perf_counter()
        try:
            url, body = self.encode(message)
        except Exception as exc:  # a message that cannot be encoded is wrong, not the gateway
            return Outcome(Verdict.REJECTED, detail=f"encode: {type(exc).__name__}: {exc}")
        if self._closed:
            return classify(latency_seconds=0.0, failure=TransportFailure(TransportKind.CLOSED, "client closed"))
        try:
            if self._session is None:
                await self.start()
            assert self._session is not None
            async with self._session.post(
                URL(url, encoded=True),
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the aiohttp boundary: nothing escapes as an exception
            failure = translate_error(exc, self._timeout_seconds)
            return classify(latency_seconds=time.perf_counter() - start, failure=failure)
        latency = time.perf_counter() - start
        if status != 200:
            return classify(latency_seconds=latency, http_status=status)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return classify(latency_seconds=latency, http_status=status, body_error=f"not JSON: {raw[:60]!r}")
        return classify(latency_seconds=latency, http_status=status, body=parsed)
