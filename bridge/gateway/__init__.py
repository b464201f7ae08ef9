"""The TOP gateway adapter: signing, the HTTP client, the pure outcome classifier and the simulated gateway.

    protocol   names, codes, envelopes and GMT+8 timestamps of sendmessagetomobile (pure)
    sign       the TOP signature: canonical string, md5 / hmac / hmac-sha256 (pure)
    classify   one pure function: HTTP status or transport failure + body -> Outcome
    client     TopClient: one pooled aiohttp session, pre-encoded bodies, never raises
    sim        SimGateway: an aiohttp server that behaves like the gateway, with faults
    simstate   the simulator's state: faults, sliding-window throttle, accepted messages, stats (pure)
    simcheck   the simulator's request checks, in the gateway's order (pure)
    loop       run a coroutine on uvloop when available (the CLI commands use it)

Only `client` and `sim` import aiohttp; import them explicitly (this package imports nothing heavy).
"""
