"""Shared pytest fixtures: a real local Kafka broker and fresh topics on it.

Fixtures
- ``kafka_bootstrap`` (session): the bootstrap address ``host:port``. Uses ``$KAFKA_BOOTSTRAP_SERVERS``
  when set; otherwise starts a clean single-node broker with ``scripts/kafka-local start`` in a
  per-session state dir (``.kafka-local/pytest-<pid>``) and stops it when the session ends.
- ``new_topic`` (function): async factory, ``name = await new_topic(partitions=3)`` creates a fresh
  uuid-named topic, waits until every partition has a leader, and returns its name. The topics it
  created are deleted at the end of the test (best effort).
- ``topic`` (function): one fresh topic with 1 partition.

Every test that uses ``kafka_bootstrap`` (directly or through ``new_topic``/``topic``) gets the ``kafka``
marker automatically, so ``pytest -m "not kafka"`` runs without starting a broker.

Every test is also watched by the ``leakguard`` plugin: a test secret in any output fails the test.

Env: ``KAFKA_BOOTSTRAP_SERVERS`` (use an existing broker), ``KAFKA_LOCAL_KEEP=1`` (keep the session
broker's state dir with its logs after the run, for debugging).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# leakguard: no test secret may appear in any output of the suite (see tests/leakguard.py);
# pytester: tests/test_leakguard.py runs a planted suite through it.
pytest_plugins = ("pytester", "leakguard")

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"
# Generous: the very first start on a machine also fetches the broker jars (~45 MB) with Maven.
KAFKA_START_TIMEOUT_S = 600.0
KAFKA_STOP_TIMEOUT_S = 60.0
TOPIC_READY_TIMEOUT_S = 15.0


class TopicFactory(Protocol):
    """Type of the ``new_topic`` fixture: creates a fresh topic and returns its name."""

    async def __call__(
        self, partitions: int = 1, *, prefix: str = "test", configs: dict[str, str] | None = None
    ) -> str:
        """Create ``<prefix>-<uuid hex>`` with ``partitions`` partitions (replication factor 1)."""
        ...


def run_kafka_local(*args: str, state_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/kafka-local ARGS`` on the broker whose state lives in ``state_dir``."""
    return subprocess.run(
        [sys.executable, str(KAFKA_LOCAL), *args],
        env={**os.environ, "KAFKA_LOCAL_DIR": str(state_dir)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``kafka`` marker (tests that need a real broker)."""
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker (see the kafka_bootstrap fixture)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that (transitively) uses ``kafka_bootstrap`` with ``kafka``, before ``-m`` filters."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a Kafka broker for the whole session (see the module docstring)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield external
        return
    state_dir = REPO_ROOT / ".kafka-local" / f"pytest-{os.getpid()}"
    stopped = False

    def stop() -> None:
        """Stop the session broker once; remove its state dir unless KAFKA_LOCAL_KEEP is set."""
        nonlocal stopped
        if stopped:
            return
        stopped = True
        result = run_kafka_local("stop", state_dir=state_dir, timeout=KAFKA_STOP_TIMEOUT_S)
        if result.returncode == 0 and not os.environ.get("KAFKA_LOCAL_KEEP"):
            shutil.rmtree(state_dir, ignore_errors=True)

    atexit.register(stop)  # last resort if the session dies before the finally below runs
    try:
        result = run_kafka_local("start", state_dir=state_dir, timeout=KAFKA_START_TIMEOUT_S)
        if result.returncode != 0:
            pytest.fail(f"scripts/kafka-local start failed:\n{result.stderr}", pytrace=False)
        yield result.stdout.strip().splitlines()[-1]
    finally:
        stop()
        atexit.unregister(stop)


async def _wait_for_leaders(admin: AIOKafkaAdminClient, name: str, partitions: int) -> None:
    """Wait until the broker's metadata shows ``name`` with ``partitions`` partitions, all led."""
    async with asyncio.timeout(TOPIC_READY_TIMEOUT_S):
        while True:
            for described in await admin.describe_topics([name]):
                parts = described["partitions"]
                if (
                    described["error_code"] == 0
                    and len(parts) == partitions
                    and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)
                ):
                    return
            await asyncio.sleep(0.05)


@pytest.fixture
async def new_topic(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    """Async factory for fresh uuid-named topics (see the module docstring)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(partitions: int = 1, *, prefix: str = "test", configs: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex}"
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})]
        )
        errors = [error for error in response.topic_errors if error[1] != 0]
        if errors:
            raise RuntimeError(f"creating topic {name} failed: {errors}")
        created.append(name)
        await _wait_for_leaders(admin, name, partitions)
        return name

    try:
        yield create
    finally:
        try:
            if created:
                with contextlib.suppress(Exception):
                    await admin.delete_topics(created)
        finally:
            await admin.close()


@pytest.fixture
async def topic(new_topic: TopicFactory) -> str:
    """One fresh topic with 1 partition."""
    return await new_topic()
