"""The README's first command, unattended: `bridge demo --exit-when-done` on a fresh local stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_the_main_job_on_local_defaults_and_exits_0_when_everything_is_accounted_for(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}  # its own broker, as in `make demo`
    env["BRIDGE_DEMO_DIR"] = str(tmp_path / "demo")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "demo",
            "--events",
            "150",
            "--rate",
            "100",
            "--exit-when-done",
            "--timeout",
            "120",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert "all expected messages delivered" in r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert "produced    150" in last
    delivered, expected = last.split("delivered")[1].split()[0].split("/")
    assert delivered == expected
    # nothing it started is left running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps
