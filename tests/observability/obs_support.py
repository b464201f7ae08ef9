"""Shared by the observability tests: the shipped files, the metric names the bridge exports, PromQL helpers.

Pure functions over the files in `config/` and `bridge.metrics.Metrics`; nothing here starts a process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.metrics import Metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "config" / "grafana" / "campus-bridge.json"
PROVISIONING = REPO_ROOT / "config" / "grafana" / "provisioning"
ALERTS = REPO_ROOT / "config" / "prometheus" / "alerts.yml"
PROMETHEUS_YML = REPO_ROOT / "config" / "prometheus" / "prometheus.yml"
MONITORING_DOC = REPO_ROOT / "docs" / "monitoring.md"
ALERT_CASES = Path(__file__).resolve().parent / "alerts_cases.yml"

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Series Prometheus itself provides, allowed in queries next to the bridge's own.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

# What the tests put in for Grafana's variables: every job/instance, and windows of a few scrapes.
DEFAULT_VARIABLES = {
    "job": ".*",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}


@dataclass(frozen=True)
class MetricInfo:
    """One collector of `Metrics`: its documented name, type and label names."""

    name: str  # as exposed and documented: counters with `_total`
    type: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    series: frozenset[str]  # every series name it exports that a query may use


def bridge_metrics() -> dict[str, MetricInfo]:
    """Every collector `Metrics` registers (fresh registry), keyed by its documented name."""
    metrics = Metrics(CollectorRegistry())
    found: dict[str, MetricInfo] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, Counter | Gauge | Histogram):
            continue
        base = collector._name
        labels = tuple(collector._labelnames)
        if isinstance(collector, Counter):
            info = MetricInfo(f"{base}_total", "counter", labels, frozenset({f"{base}_total"}))
        elif isinstance(collector, Histogram):
            series = frozenset(f"{base}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            info = MetricInfo(base, "histogram", labels, series)
        else:
            info = MetricInfo(base, "gauge", labels, frozenset({base}))
        found[info.name] = info
    return found


def exported_series() -> frozenset[str]:
    """Every series name a query may reference: the bridge's plus Prometheus's own."""
    names: set[str] = set(PROMETHEUS_SERIES)
    for info in bridge_metrics().values():
        names |= info.series
    return frozenset(names)


# ------------------------------------------------------------------------------------------------ PromQL
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRIDGE_NAME = re.compile(r"\bbridge_[a-zA-Z0-9_:]*")
_SELECTOR_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
_PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"})
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def strip_strings(expr: str) -> str:
    """The expression with its string literals (label values) blanked out."""
    return _STRING.sub('""', expr)


def series_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects: every `bridge_*` identifier and every `name{…}` selector."""
    bare = strip_strings(expr)
    names = set(_BRIDGE_NAME.findall(bare))
    names |= {n for n in _SELECTOR_NAME.findall(bare) if n not in _PROMQL_WORDS}
    return names


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace Grafana's `$var`, `${var}`, `${var:fmt}` and `[[var]]`; an unknown variable raises KeyError."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values[name]

    return _VARIABLE.sub(value, expr)


# ------------------------------------------------------------------------------------------------ dashboard
def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, also those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (not a row)."""
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    panel_id: int
    title: str
    ref_id: str
    expr: str

    @property
    def label(self) -> str:
        """For test ids and failure messages."""
        return f"{self.title} [{self.ref_id}]"


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every (panel, target) pair with its PromQL expression."""
    return [
        PanelQuery(int(panel["id"]), str(panel["title"]), str(target["refId"]), str(target["expr"]))
        for panel in query_panels(dashboard)
        for target in panel.get("targets", [])
    ]


# ------------------------------------------------------------------------------------------------ alerts
def load_alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml (recording rules left out)."""
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def alert_rule(name: str) -> dict[str, Any]:
    """One alerting rule by name."""
    for rule in load_alert_rules():
        if rule["alert"] == name:
            return rule
    raise KeyError(name)
