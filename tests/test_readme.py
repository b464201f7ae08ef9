"""The README stays true: its config reference is current, and every command it shows is run here or by a named test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.configref import END, START, render
from bridge.devstack import LocalStack

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

# Commands run by another test (or by CI itself), by the start of the command line.
COVERED_ELSEWHERE = {
    "make test": ".ci/run (CI runs exactly this)",
    "make demo": "tests/test_demo.py (bridge demo --exit-when-done)",
    "make bench": "bench/ (the suite; its quick variant runs in tests/test_bench_quick.py)",
    "python -m bench.run_all": "tests/test_bench_quick.py",
    "scripts/kafka-local": "tests/test_kafka_roundtrip.py (start twice, status, address, stop)",
    "bridge dlq replay": "tests/daemon/test_dlq_replay.py",
    "bridge demo": "tests/test_demo.py",
    "bridge gateway-sim": "tests/gateway/test_gateway_cli.py",
    "bridge run": "tests/daemon/ (the daemon as a subprocess)",
    "promtool": "tests/observability/test_alerts.py",
    "prometheus --config.file": "tests/observability/test_prometheus_live.py",
    "curl": "tests/gateway/test_gateway_sim_control.py and tests/observability (the same endpoints)",
    "docker": "no Docker engine here: tests/test_deploy.py lints the Dockerfile, replays its install steps and "
    "checks docker-compose.yml",
    "python -m bridge.configref": "this file (the reference section is compared with its output)",
    "systemctl": "tests/test_deploy.py checks the unit file",
}
RUN_HERE = ("bridge validate", "bridge config show", "bridge map", "bridge test", "bridge send", "bridge --version")


def readme_commands() -> list[str]:
    """Every command in the README: lines of ```sh blocks, `$ ` lines of ```console blocks (comments dropped)."""
    out: list[str] = []
    for kind, block in re.findall(r"```(sh|console)\n(.*?)```", README, flags=re.DOTALL):
        text = re.sub(r"\\\n\s*", " ", block)
        for raw in text.splitlines():
            line = raw.strip()
            if kind == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            elif not line or line.startswith("#"):
                continue
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                out.append(line)
    return out


def normalised(command: str) -> str:
    return command.replace(".venv/bin/", "").replace("head -1 config/examples/events.jsonl | ", "")


def test_config_reference_in_readme_is_current() -> None:
    assert START in README and END in README
    current = README.split(START, 1)[1].split(END, 1)[0]
    assert current.strip() == render().strip(), "run: python -m bridge.configref --write README.md"


def test_every_readme_command_is_run_here_or_covered_by_a_named_test() -> None:
    commands = readme_commands()
    assert len(commands) >= 10
    unknown = [c for c in commands if not normalised(c).startswith(RUN_HERE + tuple(COVERED_ELSEWHERE))]
    assert not unknown, f"README commands not exercised by any test: {unknown}"
    for covered_by in COVERED_ELSEWHERE.values():
        path = covered_by.split(" ")[0]
        if "/" in path:
            assert (REPO / path).exists(), path


def test_the_cheap_readme_commands_run_and_succeed(tmp_path: Path) -> None:
    with LocalStack(tmp_path) as stack:
        sim_url = stack.start_sim("campus-demo", "local-simulator-secret")
        env = {**os.environ, "TOP_GATEWAY_URL": sim_url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        ran = 0
        for command in readme_commands():
            if not normalised(command).startswith(RUN_HERE):
                continue
            r = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=120)  # fmt: skip
            assert r.returncode == 0, f"{command}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
            ran += 1
    assert ran >= 5


@pytest.mark.parametrize("section", ["## Quick start", "## Configuration", "## Writing rules", "## Monitoring",
                                     "## Operating it", "## Benchmarks", "## Troubleshooting"])  # fmt: skip
def test_readme_has_the_sections_users_need(section: str) -> None:
    assert f"\n{section}" in README
