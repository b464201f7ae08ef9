"""Fixtures for the pure-core unit tests: virtual time for anything that sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from engine_rig import Rig, RigFactory
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


@pytest.fixture
async def make_rig(vtime: VirtualTime) -> AsyncIterator[RigFactory]:
    """Factory of delivery-engine rigs on the test's virtual time (see engine_rig.py); engines stopped after."""
    rigs: list[Rig] = []

    async def make(**options: Any) -> Rig:
        rig = Rig(vtime, **options)
        await rig.engine.start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.engine.stop(1.0)
