"""The Monitoring documentation covers every metric (name, type, labels), every alert and every endpoint.

The text is docs/monitoring.md.
"""

from __future__ import annotations

import re

import pytest
from obs_support import MONITORING_DOC, bridge_metrics, load_alert_rules

METRICS = bridge_metrics()
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \| (?P<meaning>.+) \|$", re.M)


def documented_rows() -> dict[str, dict[str, str]]:
    """Metric table rows of the doc, by metric name."""
    return {m["name"]: m.groupdict() for m in ROW.finditer(MONITORING_DOC.read_text(encoding="utf-8"))}


def test_every_metric_name_appears() -> None:
    text = MONITORING_DOC.read_text(encoding="utf-8")
    missing = [name for name in METRICS if f"`{name}`" not in text]
    assert missing == []


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_row_matches_the_code(name: str) -> None:
    row = documented_rows().get(name)
    assert row is not None, f"no table row for {name}"
    info = METRICS[name]
    assert row["type"] == info.type
    documented = re.findall(r"`(\w+)`", row["labels"])
    assert documented == list(info.labels), "labels as declared, in order (— when none)"
    assert len(row["meaning"].strip()) > 10


def test_no_row_for_a_metric_that_does_not_exist() -> None:
    assert set(documented_rows()) - set(METRICS) == set()


def test_every_alert_and_endpoint_is_documented() -> None:
    text = MONITORING_DOC.read_text(encoding="utf-8")
    for rule in load_alert_rules():
        assert f"`{rule['alert']}`" in text
    for path in ("/metrics", "/healthz", "/readyz"):
        assert f"`{path}`" in text
