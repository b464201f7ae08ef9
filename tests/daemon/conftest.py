"""Fixtures of the daemon tests (the harness itself is in harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import Harness


@pytest.fixture
async def harness(kafka_bootstrap: str, new_topic: Any, tmp_path: Path) -> AsyncIterator[Harness]:
    """A fresh harness with a 3-partition topic; everything it started is stopped at the end."""
    h = Harness(kafka_bootstrap, tmp_path)
    h.partitions = 3
    h.topic = await new_topic(partitions=3, prefix="events", configs={"max.message.bytes": "4194304"})
    try:
        yield h
    finally:
        await h.close()
