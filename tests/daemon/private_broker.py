"""A Kafka broker of one test's own (scripts/kafka-local in a temp state dir), to stop, freeze and thaw.

The session broker is shared by every test; outage tests need one they may break. Starting one costs a few
seconds (the jars are cached by the session broker's first start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bridge.devstack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"


class PrivateBroker:
    """One broker process; `port` is fixed at construction so clients may be configured before it runs."""

    def __init__(self, state_dir: Path, *, auto_create: bool = True) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.auto_create = auto_create
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._frozen = False

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KAFKA_LOCAL_DIR": str(self.state_dir),
            "KAFKA_LOCAL_PORT": str(self.port),
            "KAFKA_LOCAL_AUTO_CREATE": "true" if self.auto_create else "false",
        }
        return subprocess.run(
            [sys.executable, str(KAFKA_LOCAL), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> str:
        """Start it (clean, empty) on `port`; the bootstrap address."""
        result = self._run("start")
        if result.returncode != 0:
            raise RuntimeError(f"kafka-local start failed:\n{result.stderr[-3000:]}")
        return self.bootstrap

    def pid(self) -> int:
        """The broker's process id."""
        return int((self.state_dir / "kafka.pid").read_text().strip())

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung broker or a partition)."""
        os.kill(self.pid(), signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT."""
        os.kill(self.pid(), signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        """Stop it (thawed first, so it can shut down cleanly). Safe to call twice."""
        if self._frozen:
            self.thaw()
        self._run("stop", timeout=60)
