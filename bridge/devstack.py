"""Local stack for the demo, the benchmarks and the integration tests: broker, simulated gateway, bridges.

Starts real processes (the project's `scripts/kafka-local` broker, `redis-server`, `bridge gateway-sim`,
`bridge run`), knows their addresses, and stops everything it started — in reverse order, also on errors —
with `close()`.
Nothing here is used by the daemon itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"


_NO_GC_LAUNCHER = "import gc, sys; gc.disable(); from bridge.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a local URL; (status, body), status 0 when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs we built
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as printed), plus per-name sums under 'name'."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        out[key] = v
        name = key.split("{", 1)[0]
        if "{" in key:
            out[name] = out.get(name, 0.0) + v
    return out


@dataclass
class Proc:
    """A started child process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal if still running."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; the exit status (None if it had to be killed)."""
        if not self.alive():
            return self.popen.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            return None

    def kill(self) -> None:
        """SIGKILL now (kill -9)."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's output, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class BridgeProc(Proc):
    """A `bridge run` process with its metrics port."""

    metrics_port: int = 0
    config_path: Path = field(default_factory=Path)

    @property
    def metrics_url(self) -> str:
        """Base URL of /metrics, /healthz, /readyz."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def metrics(self) -> dict[str, float]:
        """Current metrics (empty when unreachable)."""
        status, body = http_get(f"{self.metrics_url}/metrics")
        return parse_metrics(body.decode()) if status == 200 else {}

    def ready(self) -> tuple[int, bytes]:
        """/readyz status and body."""
        return http_get(f"{self.metrics_url}/readyz")


@dataclass
class RedisProc(Proc):
    """A throw-away `redis-server` (no persistence) on a loopback port."""

    port: int = 0

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://127.0.0.1:{self.port}/0"


class LocalStack:
    """Owns every process it starts; `close()` stops them all (also registered as a context manager)."""

    def __init__(self, workdir: Path, *, python: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.procs: list[Proc] = []
        self.bootstrap: str | None = None
        self._broker_dir: Path | None = None
        self.sim_url: str | None = None
        self.sim: Proc | None = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ broker
    def start_broker(self, timeout: float = 600.0) -> str:
        """Use $KAFKA_BOOTSTRAP_SERVERS, or start a clean local broker; return the bootstrap address."""
        existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if existing:
            self.bootstrap = existing
            return existing
        self._broker_dir = self.workdir / "kafka"
        env = {**os.environ, "KAFKA_LOCAL_DIR": str(self._broker_dir)}
        r = subprocess.run(
            [str(KAFKA_LOCAL), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"scripts/kafka-local start failed:\n{r.stderr[-3000:]}")
        self.bootstrap = r.stdout.strip()
        return self.bootstrap

    def stop_broker(self) -> None:
        """Stop the broker if this stack started it."""
        if self._broker_dir is not None:
            subprocess.run(
                [str(KAFKA_LOCAL), "stop"],
                env={**os.environ, "KAFKA_LOCAL_DIR": str(self._broker_dir)},
                capture_output=True,
                timeout=60,
                check=False,
            )
            self._broker_dir = None

    # ------------------------------------------------------------------ processes
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start a child process, output to `<workdir>/<name>.log`."""
        log_path = self.workdir / f"{name}.log"
        out = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        out.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_sim(
        self,
        app_key: str,
        app_secret: str,
        extra: list[str] | None = None,
        timeout: float = 30.0,
        *,
        gc: bool = True,
        nice: int = 0,
    ) -> str:
        """Start `bridge gateway-sim` on a free port; return its URL once it listens.

        `gc=False` switches Python's cyclic collector off in it: the simulator keeps every accepted message, and
        full collections of that growing heap stall it for tens of milliseconds — gaps and catch-up bursts in
        the receive times that a rate measurement would blame on the bridge. `nice` (e.g. -10, needs root;
        otherwise it runs at normal priority) lets it answer first on a busy machine, as a real gateway on
        its own hosts would, so its receive times measure the bridges rather than the CPU queue.
        """
        port = free_port()
        launcher = ["-m", "bridge"] if gc else ["-c", _NO_GC_LAUNCHER]
        priority = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
        argv = [
            *priority, self.python, *launcher, "gateway-sim",
            "--listen", f"127.0.0.1:{port}", "--app-key", app_key, "--app-secret", app_secret,
            *(extra or []),
        ]  # fmt: skip
        proc = self.spawn("gateway-sim", argv)
        url = f"http://127.0.0.1:{port}/router/rest"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"gateway-sim exited:\n{proc.log_tail()}")
            if "listening" in proc.log_path.read_text(errors="replace"):
                self.sim, self.sim_url = proc, url
                return url
            time.sleep(0.05)
        raise RuntimeError(f"gateway-sim did not start within {timeout}s:\n{proc.log_tail()}")

    def start_redis(self, *, port: int | None = None, name: str = "redis", timeout: float = 15.0) -> RedisProc:
        """Start `redis-server` on `port` (default: a free one) in its own folder, without persistence.

        Pass the port of a killed one to bring "the same" Redis back (empty, as after a crash without
        persistence). Returns once it answers PING.
        """
        import redis

        port = port or free_port()
        data = self.workdir / f"{name}-data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        base = self.spawn(name, argv)
        proc = RedisProc(base.name, base.popen, base.log_path, port=port)
        self.procs[-1] = proc
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not proc.alive():
                    raise RuntimeError(f"redis-server exited:\n{proc.log_tail()}")
                try:
                    if client.ping():
                        return proc
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {timeout}s:\n{proc.log_tail()}")
                time.sleep(0.05)
        finally:
            client.close()

    def write_config(self, name: str, data: dict[str, object]) -> Path:
        """Write a config file into the work dir; metrics listen on $BRIDGE_METRICS_LISTEN unless set."""
        data = dict(data)
        metrics = dict(data.get("metrics") or {})  # type: ignore[call-overload]
        metrics.setdefault("listen", "${BRIDGE_METRICS_LISTEN:-127.0.0.1:9464}")
        data["metrics"] = metrics
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def start_bridge(
        self,
        config: Path,
        *,
        name: str = "bridge",
        env: dict[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> BridgeProc:
        """Start `bridge run -c config` with its metrics on a free port (BRIDGE_METRICS_LISTEN)."""
        port = metrics_port or free_port()
        argv = [self.python, "-m", "bridge", "run", "-c", str(config)]
        env = {"BRIDGE_METRICS_LISTEN": f"127.0.0.1:{port}", **(env or {})}
        base = self.spawn(name, argv, env)
        proc = BridgeProc(base.name, base.popen, base.log_path, metrics_port=port, config_path=config)
        self.procs[-1] = proc
        return proc

    def wait_bridge(self, proc: BridgeProc, partitions: int, timeout: float = 60.0) -> None:
        """Wait until the bridge is ready and holds `partitions` partitions."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")
            status, _ = proc.ready()
            if status == 200 and proc.metrics().get("bridge_assigned_partitions", 0) >= partitions:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name} not ready with {partitions} partitions in {timeout}s:\n{proc.log_tail()}")

    def close(self) -> None:
        """Stop every process (reverse order), then the broker."""
        for proc in reversed(self.procs):
            proc.stop(timeout=40)
        self.procs.clear()
        self.stop_broker()
