"""A broken HTTP server for tests: it answers every request with a malformed status line (`HTTP/1.1 2OO OK`).

aiohttp then raises an error whose text quotes the full request URL, `&session=…&sign=…` included: the
case that must never reach a log line, the CLI's output or a dead-letter header.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

BAD_STATUS = b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@contextlib.asynccontextmanager
async def bad_status_gateway() -> AsyncIterator[str]:
    """Serve on a free port of 127.0.0.1; yields the `/router/rest` URL. Counts nothing, accepts nothing."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(BAD_STATUS)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/router/rest"
    finally:
        server.close()
        await server.wait_closed()
