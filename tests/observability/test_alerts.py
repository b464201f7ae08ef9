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


# ------------------------------------------------------------------------------- fresh start, all zeros (issue 12)
FRESH_START = "fresh start, all zeros"


def alert_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(ALERT_CASES.read_text())["tests"]
    return cases


def fresh_bridge_series() -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Series name -> label sets a freshly started bridge exports before any traffic (primed with one rule)."""
    from prometheus_client import CollectorRegistry

    from bridge.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    metrics.prime(["comment_on_post"])
    metrics.set_build_info()
    out: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created") or (sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"):
                continue
            out.setdefault(sample.name, set()).add(frozenset(sample.labels.items()))
    return out


def test_fresh_start_case_feeds_every_series_a_fresh_bridge_exports() -> None:
    [case] = [c for c in alert_cases() if c["name"] == FRESH_START]
    given: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for item in case["input_series"]:
        name, _, labels = item["series"].partition("{")
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels)) - {("job", "campus-bridge"), ("instance", "b1:9464")}
        given.setdefault(name, set()).add(pairs)
    fresh = fresh_bridge_series()
    for name, label_sets in fresh.items():
        assert name in given, f"{name} missing from the fresh-start case"
        if name != "bridge_build_info":
            assert label_sets <= given[name], f"{name}: label sets {label_sets - given[name]} missing"
    # the per-partition gauges appear with the first assignment, also at 0
    for name in ("bridge_consumer_lag_messages", "bridge_oldest_unfinished_age_seconds", "bridge_partition_paused"):
        assert name in given
    values = " ".join(item["values"] for item in case["input_series"] if "dead_letters" in item["series"])
    assert set(values.split()) == {"0x40"}, "every dead-letter reason stays at its primed 0"


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_every_alert_has_a_fresh_start_case_and_a_firing_case(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    [fresh] = [c for c in alert_cases() if c["name"] == FRESH_START]
    quiet_at = [t["eval_time"] for t in fresh["alert_rule_test"] if t["alertname"] == name and t["exp_alerts"] == []]
    assert "40m" in quiet_at and "1m" in quiet_at, "quiet from the first minute to long after every `for`"
    firing = [
        t
        for c in alert_cases()
        if c["name"] != FRESH_START
        for t in c["alert_rule_test"]
        if t["alertname"] == name and t["exp_alerts"]
    ]
    assert firing, f"{name} has no case where it fires"
