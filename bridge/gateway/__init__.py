"""The TOP gateway adapter: signing, the HTTP client, the pure outcome classifier and the simulated gateway.

    protocol   names, codes, envelopes and GMT+8 timestamps of sendmessagetomobile (pure)
    sign       the TOP signature: canonical string, md5 / hmac / hmac-sha256 (pure)
    batch      the /router/batch protocol: body, separator, signed text, response split (pure)
    classify   one pure function: HTTP status or transport failure + body -> Outcome
    client     TopClient: send() and send_batch(), pre-encoded bodies, never raises
    transport  what the client needs of HTTP; the aiohttp adapter for an injected session
    http       HttpPool: keep-alive HTTP/1.1 connections on asyncio protocols + httptools
    sim        SimGateway: an aiohttp server that behaves like the gateway (REST and batch), with faults
    simstate   the simulator's state: faults, sliding-window throttle, accepted messages, stats (pure)
    simcheck   the simulator's request checks, in the gateway's order (pure)
    loop       run a coroutine on uvloop when available (the CLI commands use it)

Only `client`, `http`, `transport` and `sim` do I/O; import them explicitly (this package imports nothing heavy).
"""
