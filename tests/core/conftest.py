"""Fixtures for the pure-core unit tests: virtual time for anything that sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from virtual_time import VirtualTime


@pytest.fixture
async def vtime(request: pytest.FixtureRequest) -> AsyncIterator[VirtualTime]:
    """The test's event loop on virtual time (starts at 1000.0 s; `parametrize("vtime", [t], indirect=True)`)."""
    start = float(getattr(request, "param", 1000.0))
    vt = VirtualTime(asyncio.get_running_loop(), start)
    vt.install()
    try:
        yield vt
    finally:
        vt.uninstall()
