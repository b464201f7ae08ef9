"""The documentation stays true: README.md and every docs/ page.

- the configuration reference in docs/configuration.md is the one generated from the models;
- every shell command shown (lines of ```sh blocks, `$ ` lines of ```console blocks) is run here or mapped to
  the test that runs it;
- the README stays a front page, and every page is in the MkDocs nav (`mkdocs build --strict` in `make test`
  builds the site and checks links and anchors).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.configref import DOC_PAGE, END, START, render
from bridge.devstack import LocalStack

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Commands run by another test (or by CI itself), by the start of the command line.
COVERED_ELSEWHERE = {
    "make test": ".ci/run (CI runs exactly this)",
    "make demo": "tests/test_demo.py (bridge demo --exit-when-done)",
    "make bench": "bench/ (the suite; its quick variant runs in tests/test_bench_quick.py)",
    "python -m bench.run_all": "tests/test_bench_quick.py",
    "scripts/kafka-local": "tests/test_kafka_roundtrip.py (start twice, status, address, stop)",
    "bridge dlq replay": "tests/daemon/test_dlq_replay.py (replay) and tests/daemon/test_dlq_inspect.py (--dry-run)",
    "bridge dlq inspect": "tests/daemon/test_dlq_inspect.py (listing and every filter, on a real broker)",
    "bridge demo": "tests/test_demo.py",
    "bridge gateway-sim": "tests/gateway/test_gateway_cli.py",
    "bridge check": "tests/test_check.py (against a real broker and the simulator, in process and as processes)",
    "bridge run": "tests/daemon/ (the daemon as a subprocess)",
    "promtool": "tests/observability/test_alerts.py",
    "prometheus --config.file": "tests/observability/test_prometheus_live.py",
    "curl": "tests/gateway/test_gateway_sim_control.py and tests/observability (the same endpoints)",
    "docker": "no Docker engine here: tests/test_deploy.py lints the Dockerfile, replays its install steps and "
    "checks docker-compose.yml",
    "python -m bridge.configref": "this file (the reference section is compared with its output)",
    "mkdocs build": "Makefile (`make test` builds the site with --strict)",
    "systemctl": "tests/test_deploy.py checks the unit file",
    "kafka-topics.sh": "tests/test_kafka_docs.py (the broker accepts the recommended dead-letter and deferred topic"
    " settings)",
    "env -u": "tests/test_deploy.py (test_production_config_has_no_defaults_for_where_to_send_or_credentials)",
    "helm": "tests/test_helm_chart.py (lint and template run as written; `upgrade --install` rendered with the same "
    "flags by `helm template` and its config validated: no cluster here)",
    "kubectl create secret": "tests/test_helm_chart.py (no cluster here: the Secrets created are the ones the "
    "documented helm command references)",
}
RUN_HERE = ("bridge validate", "bridge config show", "bridge map", "bridge test", "bridge send", "bridge --version")


def page_commands(page: Path) -> list[str]:
    """Every command of a page: lines of ```sh blocks, `$ ` lines of ```console blocks (comments dropped)."""
    out: list[str] = []
    text = page.read_text(encoding="utf-8")
    for kind, block in re.findall(r"```(sh|console)\n(.*?)```", text, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for raw in joined.splitlines():
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


def all_commands() -> list[tuple[str, str]]:
    """(page, command) for every page."""
    return [(page.relative_to(REPO).as_posix(), c) for page in PAGES for c in page_commands(page)]


def normalised(command: str) -> str:
    return command.replace(".venv/bin/", "").replace("head -1 config/examples/events.jsonl | ", "")


def test_config_reference_page_is_current() -> None:
    text = (REPO / DOC_PAGE).read_text(encoding="utf-8")
    assert START in text and END in text
    current = text.split(START, 1)[1].split(END, 1)[0]
    assert current.strip() == render().strip(), f"run: python -m bridge.configref --write {DOC_PAGE}"
    rows = [line for line in current.splitlines() if line.startswith("|")]
    assert rows and all(line.endswith("|") for line in rows), "one table row a line (no line break in a cell)"


def test_every_command_in_the_docs_is_run_here_or_covered_by_a_named_test() -> None:
    commands = all_commands()
    assert len(commands) >= 25
    unknown = [(p, c) for p, c in commands if not normalised(c).startswith(RUN_HERE + tuple(COVERED_ELSEWHERE))]
    assert not unknown, f"commands not exercised by any test: {unknown}"
    for covered_by in COVERED_ELSEWHERE.values():
        path = covered_by.split(" ")[0]
        if "/" in path or path == "Makefile":
            assert (REPO / path).exists(), path
    assert "mkdocs build --strict" in (REPO / "Makefile").read_text()


def test_the_cheap_commands_run_and_succeed(tmp_path: Path) -> None:
    with LocalStack(tmp_path) as stack:
        sim_url = stack.start_sim("campus-demo", "local-simulator-secret")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "SIM_GATEWAY_URL": sim_url,  # config/demo.yaml
            # config/bridge.yaml, the production example, has no defaults: a deployment sets these
            "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.campus.internal:9092",
            "TOP_GATEWAY_URL": sim_url,
            "TOP_APP_KEY": "campus-demo",
            "TOP_APP_SECRET": "local-simulator-secret",
        }
        ran = []
        for page, command in all_commands():
            if not normalised(command).startswith(RUN_HERE):
                continue
            r = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=120)  # fmt: skip
            assert r.returncode == 0, f"{page}: {command}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
            ran.append(command)
    assert len(ran) >= 8


def test_readme_is_a_front_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 12 * 1024
    for section in ("## Quick start", "## Production in five minutes", "## Documentation"):
        assert f"\n{section}" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


PAGE_SECTIONS = {
    "index.md": ["## How it works, and what it guarantees"],
    "deployment.md": ["## Container image", "## systemd"],
    "configuration.md": ["## Reference"],
    "rules.md": ["## A rule", "## Templates", "## Rule tests: `bridge test`"],
    "gateway.md": ["## Outcome classes", "## The simulated gateway"],
    "operating.md": ["## Dead letters and replay", "## Upgrading"],
    "monitoring.md": ["## Metrics", "## Alerts"],
    "troubleshooting.md": ["## Not ready"],
    "benchmarks.md": ["## Results", "## How to run"],
    "kubernetes.md": ["## Install", "## Values", "## Sharing one quota", "## Scaling on lag", "## Upgrades"],
    "development.md": ["## Tests"],
}


@pytest.mark.parametrize("page", sorted(PAGE_SECTIONS))
def test_docs_page_has_the_sections_users_need_and_is_in_the_nav(page: str) -> None:
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    for section in PAGE_SECTIONS[page]:
        assert f"\n{section}" in text, section
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    assert page in [next(iter(item.values())) for item in nav]
