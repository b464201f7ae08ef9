"""The shipped alert rules and scrape config: structure, metric names, promtool check and promtool unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from obs_support import (
    ALERT_CASES,
    ALERTS,
    PROMETHEUS_YML,
    exported_series,
    load_alert_rules,
    series_in,
)

# The alerts issue 6 asks for (plus CampusBridgeDeadLetterPublishFailing).
REQUIRED_ALERTS = (
    "CampusBridgeDown",
    "CampusBridgeNotReady",
    "CampusBridgePaused",
    "CampusBridgeLagSecondsRising",
    "CampusBridgeLagSecondsHigh",
    "CampusBridgeDeadLetters",
    "CampusBridgeGatewayErrorRatio",
    "CampusBridgeThrottledSustained",
    "CampusBridgeDeliveryLatencyHigh",
)
DURATION = re.compile(r"^\d+[smh]$")

RULES = load_alert_rules()


def promtool() -> str:
    """Path of promtool (CI installs it with scripts/install-test-deps)."""
    path = shutil.which("promtool")
    assert path, "promtool missing: run scripts/install-test-deps"
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the result (output in stdout/stderr)."""
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_required_alerts_present() -> None:
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names)), "duplicate alert names"
    for name in REQUIRED_ALERTS:
        assert name in names


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_alert_is_complete(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("CampusBridge")
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    assert DURATION.match(str(rule["for"])), "every alert waits a `for:` duration"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook"):
        assert isinstance(annotations.get(key), str) and len(annotations[key]) > 20, key
    assert "docs/troubleshooting.md" in annotations["runbook"], "runbooks point at the troubleshooting page"


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_alert_metrics_exist(rule: dict[str, Any]) -> None:
    names = series_in(rule["expr"])
    assert names, "selects no series"
    unknown = names - exported_series()
    assert not unknown, f"{sorted(unknown)} not exported by bridge.metrics.Metrics"


def test_not_ready_alert_waits_five_minutes() -> None:
    [rule] = [r for r in RULES if r["alert"] == "CampusBridgeNotReady"]
    assert rule["expr"].strip() == "bridge_ready == 0"
    assert rule["for"] == "5m"


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_promtool_rule_unit_tests(tmp_path: Path) -> None:
    """Each alert fires on a synthetic history that should page and stays quiet on one that should not.

    The cases compare labels only: they run against a copy of the rules without annotations (whose templates
    `promtool check rules` validates).
    """
    data = yaml.safe_load(ALERTS.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(ALERT_CASES, tmp_path / "cases.yml")
    result = run_promtool("test", "rules", "cases.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERT_CASES.read_text()))
    assert tested == {r["alert"] for r in RULES}, "every alert has promtool cases"


def test_prometheus_config_scrapes_the_bridge() -> None:
    data = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert data["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_YML.parent / data["rule_files"][0]).resolve() == ALERTS.resolve()
    [job] = [j for j in data["scrape_configs"] if j["job_name"] == "campus-bridge"]
    assert job["scrape_interval"] == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [static] = job["static_configs"]
    assert static["targets"]


def test_promtool_check_config_shipped() -> None:
    result = run_promtool("check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_rewritten_copy(tmp_path: Path) -> None:
    """The shipped config with its target rewritten (what a deployment does) stays valid, alerts included."""
    data = yaml.safe_load(PROMETHEUS_YML.read_text())
    data["rule_files"] = [str(ALERTS)]
    for job in data["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = ["bridge-1.campus.internal:9464", "bridge-2.campus.internal:9464"]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
