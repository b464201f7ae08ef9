"""SimGateway: an aiohttp server that behaves like the TOP gateway for sendmessagetomobile, with faults.

`POST|GET /router/rest` takes system parameters from the query string and/or the form body, checks them
like the gateway (`simcheck`), throttles per app key (`simstate.Throttle`), validates the business parameter,
injects the configured faults and records what it accepted, de-duplicated by `msg_key`. It also answers
`taobao.time.get` (same checks, answers its clock, records nothing); the `Date` header of gateway answers
follows that clock too (`clock`, skewable for tests: `bridge gateway-sim --clock-offset-seconds`).
`POST /router/batch` takes a batch (`bridge.gateway.batch`): the batch's checks and the throttle (N calls
count N; a ban refuses the whole batch with one error response) apply to the request, the request faults
(drop, hang, 502/503, bad body, latency) to all its calls, and each call gets its own method and business
checks, isp/business faults and answer, joined in order. A body over `max_body_bytes` is answered 413.
Control API:

    GET  /_sim/messages[?msg_key=K]   accepted messages with receive count and times
    GET  /_sim/stats                  counters (accepted, duplicates, refusals by code, bans, ...)
    GET  /_sim/faults                 the current fault knobs
    POST /_sim/faults                 partial update of the knobs (JSON object), answers the new knobs
    POST /_sim/reset                  forget messages, stats and bans; knobs back to the start values

In-process use (tests): `async with SimGateway(app_key="k", app_secret="s") as sim:` listens on a free port
of 127.0.0.1; `sim.url` is the endpoint and `sim.state` the live state.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from types import TracebackType
from typing import Any, Final, Self

import orjson
from aiohttp import web
from yarl import URL

from bridge.gateway import batch
from bridge.gateway.protocol import (
    APP_LIMIT_SUB_CODE,
    BUSINESS_PARAM,
    MESSAGES,
    TIME_METHOD,
    ban_message,
    error_body,
    response_body,
    result_object,
    time_body,
)
from bridge.gateway.simcheck import Refusal, RequestChecker, check_message, check_method
from bridge.gateway.simstate import Faults, SimState

PATH: Final = "/router/rest"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON: Final = "application/json"
_FORM: Final = "application/x-www-form-urlencoded"
_HTML_ERRORS: Final = {
    502: b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    503: b"<html><body><h1>503 Service Unavailable</h1></body></html>",
}
_BAD_BODY: Final = b'<html><body>{"alibaba_campus_mc_message_sendmessagetomobile_response":'
_TOO_LARGE: Final = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>"
# The page's own error example, used for recipients in reject_mobile_prefixes.
REJECT_REFUSAL: Final = Refusal(50, "Remote service error", "isv.invalid-parameter", "非法参数")
ISP_REFUSAL: Final = Refusal(15, MESSAGES[15], "isp.top-remote-service-unavailable", "远程服务暂不可用")
BUSINESS_FAILURE: Final = {
    "error_code": "400",
    "error_msg": "send failed (simulated business failure)",
    "error_level": "1",
    "error_ext_info": '{"errormsg":"send failed"}',
}


def parse_params(query: Mapping[str, str], body: bytes, content_type: str) -> dict[str, str]:
    """System and business parameters from the parsed query and a form body (body wins on repeats).

    The body is decoded by yarl's C unquoter (`+` as space), ~18x cheaper than `urllib.parse.parse_qsl`.
    """
    params = dict(query)
    if body and content_type in (_FORM, ""):
        params.update(URL.build(query_string=body.decode("utf-8", "replace"), encoded=True).query)
    return params


class SimGateway:
    """A simulated TOP gateway for one app. No I/O in the constructor; `start()` / `stop()` or `async with`.

    `clock` (epoch seconds) is the gateway's wall clock for the timestamp check; `monotonic` drives the
    throttle window and bans.
    """

    def __init__(
        self,
        *,
        app_key: str,
        app_secret: str,
        faults: Faults | None = None,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.state = SimState(faults or Faults())
        self.checker = RequestChecker(app_key, app_secret)
        self._clock = clock or time.time
        self._monotonic = monotonic or time.monotonic
        self._stopping = asyncio.Event()
        self._rid_prefix = secrets.token_hex(3)
        self._seq = 0
        self._date_second, self._date_text = -1, ""
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.port = 0
        self.app = web.Application(middlewares=[self._size_limit])
        self.in_progress = 0  # gateway requests being handled now (tests wait for 0 after killing a client)
        self.app.router.add_route("POST", PATH, self._counted(self._gateway))
        self.app.router.add_route("GET", PATH, self._counted(self._gateway))
        self.app.router.add_route("POST", batch.BATCH_PATH, self._counted(self._batch))
        self.app.router.add_get("/_sim/messages", self._messages)
        self.app.router.add_get("/_sim/stats", self._stats)
        self.app.router.add_get("/_sim/faults", self._get_faults)
        self.app.router.add_post("/_sim/faults", self._set_faults)
        self.app.router.add_post("/_sim/reset", self._reset)
        self.app.on_response_prepare.append(self._date_header)

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False) -> str:
        """Listen on host:port (0 = a free port); returns and sets `url` (`http://HOST:PORT/router/rest`)."""
        if self._runner is not None:
            return self.url
        self._stopping.clear()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.port = int(bound_port)
        self.url = f"http://{url_host}:{bound_port}{PATH}"
        return self.url

    async def stop(self) -> None:
        """Stop listening; hung requests end without a response. Idempotent."""
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _counted(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.in_progress += 1
            try:
                return await handler(request)
            finally:
                self.in_progress -= 1

        return counted

    # --- the gateway ---------------------------------------------------------------------------------
    def _request_id(self) -> str:
        self._seq += 1
        return f"{self._rid_prefix}{self._seq:07x}"

    def _error(self, refusal: Refusal) -> web.Response:
        self.state.stats.refuse(refusal.code)
        body = error_body(
            refusal.code, refusal.msg, sub_code=refusal.sub_code, sub_msg=refusal.sub_msg, request_id=self._request_id()
        )
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.stats.total_requests += 1
        raw = await request.read()
        fault = state.draw_fault()
        faulted = await self._request_fault(request, fault)
        if faulted is not None:
            return faulted
        stats = state.stats  # after the awaits: a reset meanwhile replaced it

        params = parse_params(request.query, raw, request.content_type)
        refusal = self.checker.check_system(params, self._clock())
        if refusal is not None:
            return self._error(refusal)
        ban_left = state.throttle.admit(self._monotonic())
        if ban_left is not None:
            return self._error(Refusal(7, MESSAGES[7], APP_LIMIT_SUB_CODE, ban_message(ban_left)))
        if params["method"] == TIME_METHOD:  # the gateway's clock; nothing is sent or recorded
            body = time_body(self._clock(), self._request_id(), simplify=params.get("simplify") == "true")
            return web.Response(body=orjson.dumps(body), content_type=_JSON)
        message, refusal = check_message(params.get(BUSINESS_PARAM))
        if refusal is not None:
            return self._error(refusal)
        assert message is not None
        if fault == "isp_error":
            return self._error(ISP_REFUSAL)
        if state.rejects_mobile(message.get("mobile_receiver")):
            return self._error(REJECT_REFUSAL)
        request_id = self._request_id()
        if fault == "business_failure":
            stats.business_failures += 1
            result = result_object(request_id, success=False, **BUSINESS_FAILURE)
        else:
            state.record(message["msg_key"], message, self._clock())
            result = result_object(request_id)
        body = response_body(result, request_id, simplify=params.get("simplify") == "true")
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """The HTTP `Date` of gateway answers comes from the gateway's clock, like the timestamp check."""
        if request.path not in (PATH, batch.BATCH_PATH):
            return
        now = int(self._clock())
        if now != self._date_second:
            self._date_second, self._date_text = now, formatdate(now, usegmt=True)
        response.headers["Date"] = self._date_text

    @web.middleware
    async def _size_limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """HTTP 413 for a gateway request whose body is over `max_body_bytes` (like a front end's limit)."""
        limit = self.state.faults.max_body_bytes
        if limit and request.path in (PATH, batch.BATCH_PATH) and (request.content_length or 0) > limit:
            await request.read()  # drained, so the connection stays usable
            stats = self.state.stats
            stats.total_requests += 1
            stats.http_errors["413"] = stats.http_errors.get("413", 0) + 1
            return web.Response(status=413, body=_TOO_LARGE, content_type="text/html")
        return await handler(request)

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.stats.total_requests += 1
        raw = await request.read()
        faulted = await self._request_fault(request, state.draw_request_fault())
        if faulted is not None:
            return faulted
        stats = state.stats  # after the awaits: a reset meanwhile replaced it
        stats.batches += 1
        separator = request.headers.get(batch.SEPARATOR_HEADER) or batch.SEPARATOR
        text = raw.decode("utf-8", "replace")
        refusal = self.checker.check_batch(dict(request.query), text, self._clock())
        if refusal is not None:
            return self._error(refusal)
        public, calls = batch.parse_body(text, separator)
        if not calls:
            return self._error(Refusal(40, f"{MESSAGES[40]}:batch calls"))
        stats.batch_messages += len(calls)
        ban_left = state.throttle.admit(self._monotonic(), len(calls))
        if ban_left is not None:
            return self._error(Refusal(7, MESSAGES[7], APP_LIMIT_SUB_CODE, ban_message(ban_left)))
        simplify = request.query.get("simplify") == "true"
        bodies = [orjson.dumps(self._answer_call({**public, **call}, simplify)) for call in calls]
        return web.Response(body=batch.join_responses(bodies, separator), content_type="text/plain")

    async def _request_fault(self, request: web.Request, fault: str | None) -> web.Response | None:
        """Apply the latency and the request's transport fault: the answer for a drop, a 502/503 or a bad body,
        else None (after a hang, the request goes on)."""
        state = self.state
        faults = state.faults
        if faults.latency_ms or faults.latency_jitter_ms:
            await asyncio.sleep(state.latency_seconds())
        if fault == "hang":
            state.stats.hung += 1
            if await self._hang(faults.hang_seconds):
                fault = "drop"  # shutting down: the hung request ends without a response
        stats = state.stats  # after the awaits: a reset meanwhile replaced it
        if fault == "drop":
            stats.dropped += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if fault in ("http_502", "http_503"):
            status = 502 if fault == "http_502" else 503
            stats.http_errors[str(status)] = stats.http_errors.get(str(status), 0) + 1
            return web.Response(status=status, body=_HTML_ERRORS[status], content_type="text/html")
        if fault == "bad_body":
            stats.bad_bodies += 1
            return web.Response(body=_BAD_BODY, content_type="text/html")
        return None

    def _answer_call(self, params: dict[str, str], simplify: bool) -> dict[str, Any]:
        """The response body of one call in a batch (an envelope or an error_response)."""
        state = self.state
        refusal = check_method(params)
        message: dict[str, Any] | None = None
        if refusal is None:
            message, refusal = check_message(params.get(BUSINESS_PARAM))
        if refusal is None:
            assert message is not None
            fault = state.draw_call_fault()
            if fault == "isp_error":
                refusal = ISP_REFUSAL
            elif state.rejects_mobile(message.get("mobile_receiver")):
                refusal = REJECT_REFUSAL
            else:
                request_id = self._request_id()
                if fault == "business_failure":
                    state.stats.business_failures += 1
                    result = result_object(request_id, success=False, **BUSINESS_FAILURE)
                else:
                    state.record(message["msg_key"], message, self._clock())
                    result = result_object(request_id)
                return response_body(result, request_id, simplify=simplify)
        state.stats.refuse(refusal.code)
        return error_body(
            refusal.code, refusal.msg, sub_code=refusal.sub_code, sub_msg=refusal.sub_msg, request_id=self._request_id()
        )

    async def _hang(self, seconds: float) -> bool:
        """Hold the request for `seconds`; True if the simulator is stopping meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    # --- control API ---------------------------------------------------------------------------------
    async def _messages(self, request: web.Request) -> web.Response:
        wanted = request.query.get("msg_key")
        messages = self.state.messages
        if wanted is None:
            data = [r.to_dict() for r in messages.values()]
        else:
            data = [messages[wanted].to_dict()] if wanted in messages else []
        return web.Response(body=orjson.dumps(data), content_type=_JSON)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.state.stats_dict()), content_type=_JSON)

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.state.faults.to_dict()), content_type=_JSON)

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            changes: Any = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault knobs")
            self.state.set_faults(self.state.faults.updated(changes))
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            return web.Response(status=400, body=orjson.dumps({"error": str(exc)}), content_type=_JSON)
        return await self._get_faults(request)

    async def _reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.Response(body=b'{"ok":true}', content_type=_JSON)
