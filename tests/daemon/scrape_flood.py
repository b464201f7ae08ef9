"""A scrape flood in its own process: CONCURRENCY clients, each GETting a path over and over for SECONDS.

Usage: python scrape_flood.py HOST PORT PATH CONCURRENCY SECONDS. Each client opens a connection, sends
requests on it while the server keeps it open, and reconnects when the server closes it (as a scraper
behind a retrying load balancer would). Prints one JSON line: responses, connects, errors.
It runs apart from the test's own event loop (which hosts the simulated gateway), so the flood's cost lands
on the daemon only, not on the gateway whose delivery rate the test measures.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import uvloop


async def client(host: str, port: int, request: bytes, until: float, counts: dict[str, int]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["errors"] += 1
            await asyncio.sleep(0.01)
            continue
        counts["connects"] += 1
        try:
            while time.monotonic() < until:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                counts["responses"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError, ValueError):
            counts["errors"] += 1
        finally:
            writer.close()


async def main(host: str, port: int, path: str, concurrency: int, seconds: float) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    counts = {"responses": 0, "connects": 0, "errors": 0}
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(host, port, request, until, counts) for _ in range(concurrency)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    host, port, path, concurrency, seconds = sys.argv[1:6]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one descriptor per client
    uvloop.run(main(host, int(port), path, int(concurrency), float(seconds)))
