"""The Helm chart deploy/helm/campus-bridge: `helm lint` and `helm template` with default and full values, and
the rendered manifests checked (probes, security context, secrets by reference only, the config mounted where
`bridge run` reads it and accepted by `bridge validate`, grace period, static membership, autoscaling bounds,
monitoring objects in sync with config/prometheus/alerts.yml).

helm is built once from the Go module proxy by scripts/install-helm (cached in .cache/tools).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import bridge

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "campus-bridge"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
FULL = CHART / "ci" / "full-values.yaml"
CONFIG_DIR = "/etc/campus-bridge"


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the helm binary (built and cached by scripts/install-helm)."""
    r = subprocess.run([str(REPO / "scripts" / "install-helm")], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart; the manifests."""
    r = run_helm(helm, "template", "cb", str(CHART), *args)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def one(manifests: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind}*{suffix}: {len(found)}"
    return found[0]


def workload(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    [w] = [m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")]
    return w


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    [c] = workload(manifests)["spec"]["template"]["spec"]["containers"]
    return c


def env(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(manifests)["env"]}


def bridge_config(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(one(manifests, "ConfigMap", "-config")["data"]["bridge.yaml"])
    return data


VARIANTS = {"default": [], **{p.stem: ["-f", str(p)] for p in CI_VALUES}}


@pytest.fixture(scope="module", params=sorted(VARIANTS), ids=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest, helm: str) -> list[dict[str, Any]]:
    return render(helm, *VARIANTS[request.param])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_passes(helm: str, variant: str) -> None:
    r = run_helm(helm, "lint", str(CHART), "--strict", *VARIANTS[variant])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 chart(s) failed" in r.stdout


def test_full_values_render_every_optional_object(helm: str) -> None:
    kinds = sorted(m["kind"] for m in render(helm, "-f", str(FULL)))
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "PodDisruptionBudget",
            "PrometheusRule",
            "ScaledObject",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "StatefulSet",
        ]
    )
    assert not any(m["kind"] == "Secret" for m in render(helm, "-f", str(FULL))), "secrets are references only"


def test_probes_hit_healthz_and_readyz_on_the_metrics_port(rendered: list[dict[str, Any]]) -> None:
    c = container(rendered)
    [port] = c["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", 9464)
    assert bridge_config(rendered)["metrics"]["listen"].endswith(":9464")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_runs_as_non_root_with_a_read_only_root_filesystem(rendered: list[dict[str, Any]]) -> None:
    pod = workload(rendered)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    sc = container(rendered)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container(rendered)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"
    assert pod["automountServiceAccountToken"] is False


def test_secrets_come_from_secret_references_only(helm: str) -> None:
    manifests = render(helm, "-f", str(FULL))
    variables = env(manifests)
    for name, ref in {
        "TOP_APP_SECRET": ("campus-bridge-top", "app-secret"),
        "REDIS_PASSWORD": ("campus-bridge-redis", "redis-password"),
        "KAFKA_SASL_PASSWORD": ("campus-bridge-kafka", "password"),
    }.items():
        key_ref = variables[name]["valueFrom"]["secretKeyRef"]
        assert (key_ref["name"], key_ref["key"]) == ref
        assert "value" not in variables[name]
    secretish = [n for n in variables if re.search("SECRET|PASSWORD|TOKEN", n)]
    assert all("valueFrom" in variables[n] for n in secretish)
    cfg = bridge_config(manifests)
    assert cfg["gateway"]["app_secret"] == "${TOP_APP_SECRET}"
    assert cfg["delivery"]["rate_limit"]["shared"]["password"] == "${REDIS_PASSWORD}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for ref in (values["gateway"]["appSecret"], values["sharedQuota"]["password"], values["kafka"]["saslPassword"]):
        assert set(ref) == {"secretName", "key"}, "values hold Secret names, never secret values"


def mounted_config_maps(manifests: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """{mount path: {file name: text}} of the ConfigMap volumes of the bridge container."""
    pod = workload(manifests)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    maps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
    out: dict[str, dict[str, str]] = {}
    for mount in container(manifests)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert "subPath" not in mount and "items" not in volume["configMap"], "updates must reach the files"
            assert mount["readOnly"] is True
            out[mount["mountPath"]] = maps[volume["configMap"]["name"]]
    return out


def materialise(manifests: list[dict[str, Any]], root: Path) -> Path:
    """Lay out the ConfigMap volumes under `root` as the pod sees them under /etc/campus-bridge; the config
    file `bridge run -c` is given, at its place under `root`."""
    for mount_path, files in mounted_config_maps(manifests).items():
        assert Path(mount_path).is_relative_to(CONFIG_DIR)
        folder = root / Path(mount_path).relative_to(CONFIG_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    return config_file(manifests, root)


def config_file(manifests: list[dict[str, Any]], root: Path) -> Path:
    """Where under `root` the file `bridge run -c` is given lies (root standing for /etc/campus-bridge)."""
    args = container(manifests)["args"]
    assert args[:2] == ["run", "-c"]
    assert next(e["value"] for e in container(manifests)["env"] if e["name"] == "BRIDGE_CONFIG") == args[2]
    return root / Path(args[2]).relative_to(CONFIG_DIR)


def pod_environment(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment: literal values as rendered, Secret references and the pod name filled in."""
    out: dict[str, str] = {}
    for name, e in env(manifests).items():
        if "value" in e:
            out[name] = e["value"]
        elif "fieldRef" in e["valueFrom"]:
            out[name] = "cb-campus-bridge-0"
        else:
            out[name] = f"from-secret-{e['valueFrom']['secretKeyRef']['key']}"
    return out


def bridge_validate(config: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`bridge validate -c config` with the pod's environment (and no BRIDGE_CONFIG of this shell)."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}, **environment},
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_mounted_config_and_rules_are_what_bridge_run_reads_and_they_validate(
    helm: str, variant: str, tmp_path: Path
) -> None:
    args = list(VARIANTS[variant])
    if variant == "default":  # the defaults leave the site's values empty (the pods would exit naming them)
        args += ["--set", "kafka.bootstrapServers=kafka:9092", "--set", "gateway.appKey=12345678"]
        args += ["--set", "gateway.appSecret.secretName=top"]
    manifests = render(helm, *args)
    config = materialise(manifests, tmp_path / "etc")
    assert config.name == "bridge.yaml"
    [pattern] = bridge_config(manifests)["rules"]["rule_files"]
    rules = sorted(p.name for p in config.parent.glob(pattern))
    assert rules == sorted(mounted_config_maps(manifests)[f"{CONFIG_DIR}/rules"]), "rule_files finds the rules"
    r = bridge_validate(config, pod_environment(manifests))
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_default_values_leave_the_site_settings_to_the_operator(helm: str, tmp_path: Path) -> None:
    manifests = render(helm)
    config = materialise(manifests, tmp_path / "etc")
    environment = {k: v for k, v in pod_environment(manifests).items() if v}  # empty values: unset
    r = bridge_validate(config, environment)
    assert r.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in r.stdout + r.stderr


def test_grace_period_is_above_the_drain_timeout(rendered: list[dict[str, Any]], helm: str) -> None:
    grace = workload(rendered)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > bridge_config(rendered)["delivery"]["shutdown_timeout_seconds"]
    r = run_helm(helm, "template", "cb", str(CHART), "--set", "terminationGracePeriodSeconds=30")
    assert r.returncode != 0
    assert "must be above delivery.shutdown_timeout_seconds" in r.stderr


def test_statefulset_gives_static_membership_from_the_pod_name(helm: str) -> None:
    manifests = render(helm)
    sts = one(manifests, "StatefulSet")
    assert sts["spec"]["serviceName"] == one(manifests, "Service")["metadata"]["name"]
    assert bridge_config(manifests)["kafka"]["group_instance_id"] == "${POD_NAME}"
    assert env(manifests)["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    r = run_helm(helm, "template", "cb", str(CHART), "--set", "workload=Deployment")
    assert r.returncode != 0 and "staticMembership needs workload: StatefulSet" in r.stderr
    deployment = render(helm, "-f", str(CHART / "ci" / "deployment-hpa-values.yaml"))
    assert "group_instance_id" not in bridge_config(deployment)["kafka"]
    assert "replicas" not in workload(deployment)["spec"], "the autoscaler owns the replica count"


def test_a_config_change_rolls_the_pods_and_a_rules_change_does_not(helm: str) -> None:
    def checksum(*args: str) -> str:
        value: str = workload(render(helm, *args))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    base = checksum()
    assert checksum("--set", "config.delivery.max_in_flight=64") != base
    assert checksum("--set-string", "rules.extra\\.yaml=rules: []") == base


def test_pdb_and_service_select_the_pods(rendered: list[dict[str, Any]]) -> None:
    labels = workload(rendered)["spec"]["template"]["metadata"]["labels"]
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    service = one(rendered, "Service")
    for selector in (pdb["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector.items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_service_monitor_scrapes_the_service_with_the_job_the_alerts_expect(helm: str) -> None:
    manifests = render(helm, "-f", str(FULL))
    monitor, service = one(manifests, "ServiceMonitor"), one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "campus-bridge"
    alerts = (REPO / "config" / "prometheus" / "alerts.yml").read_text()
    assert 'job="campus-bridge"' in alerts


def test_prometheus_rule_is_config_prometheus_alerts_yml(helm: str) -> None:
    shipped = (REPO / "config" / "prometheus" / "alerts.yml").read_text()
    assert (CHART / "files" / "alerts.yml").read_text() == shipped, "cp config/prometheus/alerts.yml into files/"
    rule = one(render(helm, "-f", str(FULL)), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(shipped)["groups"]


def test_the_chart_example_rules_are_the_shipped_ones(helm: str) -> None:
    shipped = REPO / "config" / "rules" / "campus.yaml"
    assert (CHART / "files" / "rules" / "campus.yaml").read_text() == shipped.read_text()
    assert one(render(helm), "ConfigMap", "-rules")["data"] == {"campus.yaml": shipped.read_text()}


def test_keda_scales_on_the_groups_lag_within_the_partition_count(helm: str) -> None:
    manifests = render(helm, "-f", str(FULL))
    scaled = one(manifests, "ScaledObject")
    values = yaml.safe_load(FULL.read_text())["autoscaling"]["keda"]
    assert scaled["spec"]["maxReplicaCount"] <= values["partitions"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == workload(manifests)["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == bridge_config(manifests)["kafka"]["group_id"]
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert "replicas" not in workload(manifests)["spec"]
    r = run_helm(helm, "template", "cb", str(CHART), "-f", str(FULL), "--set", "autoscaling.keda.maxReplicas=7")
    assert r.returncode != 0 and "must not exceed the partitions" in r.stderr
    r = run_helm(helm, "template", "cb", str(CHART), "-f", str(FULL), "--set", "autoscaling.hpa.enabled=true")
    assert r.returncode != 0 and "not both" in r.stderr


def test_hpa_alternative_scales_on_cpu_within_the_partition_count(helm: str) -> None:
    hpa = one(render(helm, "-f", str(CHART / "ci" / "deployment-hpa-values.yaml")), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] <= 3
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_chart_app_version_is_the_bridge_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == bridge.__version__


NOTE_RULES = """\
rules:
  - id: note
    when: "event.kind == 'note'"
    message:
      event_type: mobile_receiver
      mobile_receiver: "{{ event.to }}"
"""


def kubelet_volume(files: dict[str, str], folder: Path, version: str) -> None:
    """Write (or swap in) a ConfigMap volume as the kubelet does: a timestamped dir, `..data` pointing at it,
    one symlink per file through `..data`; a new version is switched in by one atomic rename."""
    target = folder / f"..{version}"
    target.mkdir(parents=True)
    for name, text in files.items():
        (target / name).write_text(text)
    tmp_link = folder / "..data_tmp"
    tmp_link.symlink_to(target.name)
    tmp_link.replace(folder / "..data")
    for link in folder.iterdir():
        if not link.name.startswith("..") and not (folder / "..data" / link.name).exists():
            link.unlink()  # a file removed from the ConfigMap
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(Path("..data") / name)


async def test_rules_in_the_configmap_volume_reload_when_the_kubelet_swaps_them(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from bridge.metrics import Metrics
    from bridge.reload import RuleReloader
    from bridge.rules import load_rules
    from bridge.settings import load_settings

    site = ["--set", "kafka.bootstrapServers=kafka:9092", "--set", "gateway.appKey=k"]
    site += ["--set", "gateway.appSecret.secretName=top"]
    first = render(helm, *site)
    changed = render(helm, *site, "--set-string", f"rules.notes\\.yaml={NOTE_RULES}")
    assert workload(first)["spec"]["template"] == workload(changed)["spec"]["template"], "no restart for rules"
    for name, value in pod_environment(first).items():
        monkeypatch.setenv(name, value)
    volumes = mounted_config_maps(first)
    for mount_path, files in volumes.items():
        kubelet_volume(files, tmp_path / "etc" / Path(mount_path).relative_to(CONFIG_DIR), "2026_11_30_01")
    settings = load_settings(config_file(first, tmp_path / "etc"))
    applied: list[Any] = []
    reloader = RuleReloader(settings, load_rules(settings), applied.append, Metrics(CollectorRegistry()))
    assert "note" not in reloader.rules.ids
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.watch(0.05, stop))
    await asyncio.sleep(0.2)  # the watcher has taken its first look at the files
    rules_mount = f"{CONFIG_DIR}/rules"
    kubelet_volume(mounted_config_maps(changed)[rules_mount], tmp_path / "etc" / "rules", "2026_11_30_02")
    async with asyncio.timeout(10):
        while not applied:
            await asyncio.sleep(0.05)
    stop.set()
    await task
    assert list(reloader.rules.ids) == ["note"]


def test_the_kubernetes_page_commands_render_validate_and_create_the_secrets_they_reference(
    helm: str, tmp_path: Path
) -> None:
    """docs/kubernetes.md: no cluster here, so `helm upgrade --install` is rendered with `helm template` (same
    chart, same flags) and its config validated; `helm lint` / `helm template` run as written; the Secrets the
    `kubectl create secret` lines create are exactly the ones the helm command references."""
    import shlex

    from test_docs import page_commands

    commands = page_commands(REPO / "docs" / "kubernetes.md")
    created: set[tuple[str, str]] = set()
    referenced: set[tuple[str, str]] = set()
    installs = 0
    for command in commands:
        words = shlex.split(command)
        if words[:4] == ["kubectl", "create", "secret", "generic"]:
            key = next(w for w in words if w.startswith("--from-literal=")).split("=", 2)[1]
            created.add((words[4], key))
            continue
        assert words[0] == "helm", command
        if words[1:3] == ["upgrade", "--install"]:
            installs += 1
            words = ["template", *words[3:]]
            sets = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
            values = yaml.safe_load((CHART / "values.yaml").read_text())
            for section, field in (("gateway", "appSecret"), ("sharedQuota", "password"), ("kafka", "saslPassword")):
                prefix = f"{section}.{field}"
                if f"{prefix}.secretName" in sets:
                    default_key = values[section][field]["key"]
                    referenced.add((sets[f"{prefix}.secretName"], sets.get(f"{prefix}.key", default_key)))
            r = run_helm(helm, *words)
            assert r.returncode == 0, f"{command}\n{r.stderr}"
            manifests = [d for d in yaml.safe_load_all(r.stdout) if d]
            config = materialise(manifests, tmp_path / f"install-{installs}")
            v = bridge_validate(config, pod_environment(manifests))
            assert v.returncode == 0, v.stdout + v.stderr
        else:
            r = run_helm(helm, *words[1:])
            assert r.returncode == 0, f"{command}\n{r.stderr}"
    assert installs >= 1
    assert created == referenced


def test_with_the_shared_quota_the_policy_state_goes_to_the_same_redis(helm: str) -> None:
    """Replicas share recipients: with sharedQuota the rule policies' state is in Redis, unless the config says."""
    assert bridge_config(render(helm, "-f", str(FULL)))["delivery"]["policy_state"] == {"store": "redis"}
    assert "policy_state" not in bridge_config(render(helm))["delivery"]
    own = render(helm, "-f", str(FULL), "--set", "config.delivery.policy_state.store=memory")
    assert bridge_config(own)["delivery"]["policy_state"] == {"store": "memory"}
