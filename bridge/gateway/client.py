"""TopClient: signs MobileReceiverMessageEvents, POSTs them to the TOP gateway, returns one Outcome per message.

Two ways to call, same classification (`bridge.gateway.classify`):
- `send(message)`: one call to `/router/rest`, shaped like the official SDKs': system parameters and `sign` in
  the query string, the business parameter `mobile_receiver_message_event` (compact JSON) form-encoded in the
  body; the signature covers both.
- `send_batch(messages)`: one call to `/router/batch` carrying up to 50 messages (`bridge.gateway.batch`),
  with one Outcome per message, in order.
Everything that does not change between calls (static query, signer state, request heads) is built once; per
call the client formats the GMT+8 timestamp (cached per second), signs and sends pre-encoded bytes over
the keep-alive pool (`bridge.gateway.http`) or an injected aiohttp session. Neither method raises, except
`asyncio.CancelledError`; no outcome text quotes the request's query string (it carries `session`, `sign`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, Self
from urllib.parse import quote_plus

import orjson
from yarl import URL

from bridge import __version__
from bridge.gateway import batch
from bridge.gateway.classify import TransportFailure, TransportKind, classify
from bridge.gateway.http import HttpPool
from bridge.gateway.protocol import (
    API_VERSION,
    BUSINESS_PARAM,
    FORM_CONTENT_TYPE,
    FORMAT,
    METHOD,
    format_timestamp,
)
from bridge.gateway.sign import CanonicalTemplate, Signer
from bridge.gateway.transport import AiohttpTransport, Endpoint, Response, Transport, TransportError, strip_query
from bridge.models import MobileReceiverMessageEvent, Outcome, Verdict
from bridge.settings import GatewaySettings

if TYPE_CHECKING:
    import aiohttp

USER_AGENT: Final = f"campus-bridge/{__version__}"
_ENTRY_PREFIX: Final = f"{BUSINESS_PARAM}="
_BODY_PREFIX: Final = _ENTRY_PREFIX.encode("ascii")
# Statuses a batch answers for its content as a whole: halve it until the message at fault is alone.
_SPLIT_STATUSES: Final = frozenset({400, 413})


def _public_form_quote(value: str) -> str:
    return URL.build(query={"v": value}).raw_query_string[2:]


try:  # yarl's C quoter for query values, called directly: half the cost of going through URL.build
    from yarl._quoting import _Quoter

    _query_value_quoter: Callable[[str], str] = _Quoter(safe="?/:@", qs=True, requote=False)
    if _query_value_quoter("a b+&=%#?/:@课") != _public_form_quote("a b+&=%#?/:@课"):  # pragma: no cover
        raise ImportError("yarl's query quoter changed")
except ImportError:  # pragma: no cover - a yarl without it: the public path, same result
    _query_value_quoter = _public_form_quote


def form_quote(value: str) -> str:
    """x-www-form-urlencoded quoting of one value (space as `+`; `+ & = % #` and non-ASCII escaped).

    yarl's C quoter (the one `URL.build(query=...)` uses for values, checked against it at import): ~9x
    cheaper than `quote_plus` for a 400-byte JSON value, deterministic, and decoded back to the same text by
    any form decoder (tested).
    """
    return _query_value_quoter(value)


def system_params(settings: GatewaySettings, *, with_method: bool = True) -> dict[str, str]:
    """The static system parameters (all but `timestamp` and `sign`); empty values are left out.

    A batch call names its method in the body's public line, not in the query (`with_method=False`).
    """
    params = {"method": METHOD} if with_method else {}
    params.update(
        {"app_key": settings.app_key, "v": API_VERSION, "format": FORMAT, "sign_method": settings.sign_method}
    )
    if settings.session is not None and settings.session.get_secret_value():
        params["session"] = settings.session.get_secret_value()
    if settings.partner_id:
        params["partner_id"] = settings.partner_id
    if settings.simplify:
        params["simplify"] = "true"
    return params


class RequestObserver(Protocol):
    """Told of every HTTP request the client makes (`bridge.metrics.Metrics` is one)."""

    def gateway_http_request(self, endpoint: str) -> None:
        """One HTTP request to `endpoint`: "rest" (one message) or "batch" (several)."""
        ...


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{k}={quote_plus(v)}" for k, v in params.items())


class TopClient:
    """Sends messages to `alibaba.campus.mc.message.sendmessagetomobile`; one connection pool per client.

    No I/O in the constructor. `start()` prepares the pool (a first call does it too), `close()` is idempotent
    and closes only what the client created: an injected aiohttp `session` is used as is and left open.
    Use as `async with TopClient(...) as client:`. `clock` returns Unix epoch seconds (default `time.time`)
    and only feeds the `timestamp` parameter; `observer` is told of each HTTP request (metrics).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] | None = None,
        session: aiohttp.ClientSession | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or time.time
        self._session = session
        self._observer = observer
        self._transport: Transport | None = None
        self._closed = False
        self._signer = Signer(settings.secret(), settings.sign_method)
        static = system_params(settings)
        self._template = CanonicalTemplate(static, ("timestamp", BUSINESS_PARAM))
        sep = "&" if "?" in settings.url else "?"
        self._rest = Endpoint(settings.url + sep + _query(static), FORM_CONTENT_TYPE)
        batch_static = system_params(settings, with_method=False)
        self._batch_template = CanonicalTemplate(batch_static, ("timestamp",))
        self._batch: Endpoint | None = None
        self._batch_error = ""
        try:
            batch_url = batch.batch_url(settings.url)
            sep = "&" if "?" in batch_url else "?"
            self._batch = Endpoint(batch_url + sep + _query(batch_static), batch.CONTENT_TYPE)
        except ValueError as exc:
            self._batch_error = str(exc)
        self._ts_second = -1
        self._ts_text = ""
        self._ts_quoted = ""

    async def start(self) -> None:
        """Prepare the transport: the keep-alive pool (`gateway.max_connections`), or the injected session."""
        if self._transport is None and not self._closed:
            s = self._settings
            transport: Transport
            if self._session is not None:
                transport = AiohttpTransport(self._session, s.timeout_seconds, USER_AGENT)
            else:
                transport = HttpPool(
                    s.url,
                    max_connections=s.max_connections,
                    timeout_seconds=s.timeout_seconds,
                    user_agent=USER_AGENT,
                    cafile=s.ssl_cafile,
                )
            await transport.start()
            self._transport = transport

    async def close(self) -> None:
        """Close the connections this client opened. Safe to call more than once."""
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- encoding (pure apart from the clock) ----------------------------------------------------------
    def _timestamp(self) -> str:
        now = int(self._clock())
        if now != self._ts_second:
            self._ts_second = now
            self._ts_text = format_timestamp(now)
            self._ts_quoted = quote_plus(self._ts_text)
        return self._ts_text

    def _encode_event(self, event: str) -> tuple[str, bytes]:
        signature = self._signer.sign_canonical(self._template.render(self._timestamp(), event))
        return f"&timestamp={self._ts_quoted}&sign={signature}", _BODY_PREFIX + form_quote(event).encode("ascii")

    def _encode_batch(self, events: Sequence[str]) -> tuple[str, bytes]:
        body = batch.encode_body([_ENTRY_PREFIX + form_quote(e) for e in events])
        canonical = batch.sign_input(self._batch_template.render(self._timestamp()), body)
        signature = self._signer.sign_canonical(canonical)
        return f"&timestamp={self._ts_quoted}&sign={signature}", body.encode("ascii")

    def encode(self, message: MobileReceiverMessageEvent) -> tuple[str, bytes]:
        """The signed single call for `message`: the full URL with its query string, and the body bytes."""
        tail, body = self._encode_event(message.to_json().decode("utf-8"))
        return self._rest.url + tail, body

    def encode_batch(self, messages: Sequence[MobileReceiverMessageEvent]) -> tuple[str, bytes]:
        """The signed batch call for `messages`: the full `/router/batch` URL with its query, and the body."""
        if self._batch is None:
            raise ValueError(self._batch_error)
        tail, body = self._encode_batch([m.to_json().decode("utf-8") for m in messages])
        return self._batch.url + tail, body

    # --- calls ------------------------------------------------------------------------------------
    async def send(self, message: MobileReceiverMessageEvent) -> Outcome:
        """Send one message to `/router/rest` and classify the result. Never raises, except CancelledError."""
        start = time.perf_counter()
        try:
            event = message.to_json().decode("utf-8")
        except Exception as exc:  # a message that cannot be encoded is wrong, not the gateway
            return _unencodable(exc)
        return await self._send_event(event, start)

    async def send_batch(self, messages: Sequence[MobileReceiverMessageEvent]) -> list[Outcome]:
        """Send up to 50 messages in one `/router/batch` call: exactly one Outcome per message, in order.

        Each sub-response is classified on its own; a batch refused as a whole (one error response instead
        of N) or a transport failure gives every message that outcome. A batch answered 400 or 413 is halved
        until the message at fault is alone. One message goes to `/router/rest`. Never raises, except
        CancelledError.
        """
        start = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(messages)
        events: list[str] = []
        positions: list[int] = []
        for i, message in enumerate(messages):
            try:
                events.append(message.to_json().decode("utf-8"))
                positions.append(i)
            except Exception as exc:
                outcomes[i] = _unencodable(exc)
        if events:
            for i, outcome in zip(positions, await self._send_events(events, start), strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    async def _send_event(self, event: str, start: float) -> Outcome:
        tail, body = self._encode_event(event)
        result = await self._post(self._rest, "rest", tail, body)
        latency = time.perf_counter() - start
        if isinstance(result, TransportFailure):
            return classify(latency_seconds=latency, failure=result)
        if result.status != 200:
            return _status_outcome(result, latency, len(body))
        return _parsed(result.body, latency)

    async def _send_events(self, events: list[str], start: float) -> list[Outcome]:
        n = len(events)
        if n == 1:
            return [await self._send_event(events[0], start)]
        if self._batch is None:
            failure = TransportFailure(TransportKind.INVALID_URL, self._batch_error)
            return [classify(latency_seconds=0.0, failure=failure)] * n
        tail, body = self._encode_batch(events)
        result = await self._post(self._batch, "batch", tail, body)
        latency = time.perf_counter() - start
        if isinstance(result, TransportFailure):
            return [classify(latency_seconds=latency, failure=result)] * n
        if result.status != 200:
            if result.status in _SPLIT_STATUSES:
                half = n // 2
                first = await self._send_events(events[:half], time.perf_counter())
                return first + await self._send_events(events[half:], time.perf_counter())
            return [_status_outcome(result, latency, len(body))] * n
        parts = batch.split_responses(result.body)
        if len(parts) == n:
            return [_parsed(part, latency) for part in parts]
        whole = _parsed(parts[0], latency)
        if len(parts) == 1 and whole.verdict is not Verdict.DELIVERED:
            note = f"the whole batch of {n} refused"
            return [replace(whole, detail=f"{whole.detail}; {note}" if whole.detail else note)] * n
        reason = f"{len(parts)} responses for a batch of {n}"
        return [classify(latency_seconds=latency, http_status=200, body_error=reason)] * n

    async def _post(self, endpoint: Endpoint, name: str, tail: str, body: bytes) -> Response | TransportFailure:
        transport = self._transport
        if transport is None:
            if self._closed:
                return TransportFailure(TransportKind.CLOSED, "client closed")
            await self.start()
            transport = self._transport
            assert transport is not None
        if self._observer is not None:
            self._observer.gateway_http_request(name)
        try:
            return await transport.post(endpoint, tail, body)
        except TransportError as exc:
            return exc.failure


def _unencodable(exc: Exception) -> Outcome:
    return Outcome(Verdict.REJECTED, detail=f"encode: {type(exc).__name__}: {exc}")


def _status_outcome(response: Response, latency: float, request_bytes: int) -> Outcome:
    return classify(
        latency_seconds=latency,
        http_status=response.status,
        request_bytes=request_bytes,
        retry_after=response.retry_after,
    )


def _parsed(raw: bytes, latency: float) -> Outcome:
    """The Outcome of one HTTP-200 response body (a whole single-call body or one part of a batch)."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return classify(latency_seconds=latency, http_status=200, body_error=f"not JSON: {strip_query(repr(raw[:60]))}")
    return classify(latency_seconds=latency, http_status=200, body=parsed)
