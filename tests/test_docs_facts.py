"""Facts the documentation states are checked against their source: every config default it names against the
pydantic models, the variables' defaults against the shipped config, the paused-alert codes against the simulated
gateway's answers, and the demo's stated rates against the demo command and its config."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from bridge.cli import build_parser
from bridge.gateway.protocol import API_VERSION, FORMAT, METHOD
from bridge.gateway.sign import Signer, canonical_string
from bridge.gateway.simcheck import RequestChecker
from bridge.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KEY = r"(?P<key>(?:kafka|gateway|delivery|rules|metrics|logging)(?:\.[a-z_]+)+)"
# How the docs state a config default: "`key` (default `value`" / "`key`, default `value`" / "`key: value` (default)".
STATED = [
    re.compile(rf"`{KEY}`\s*[,(]\s*default `(?P<value>[^`]+)`"),
    re.compile(rf"`{KEY}`\s*\(default `(?P<value>[^`]+)`"),
    re.compile(rf"`{KEY}: (?P<value>[^`]+)` \(default\)"),
]
NEAR_DEFAULT = re.compile(rf"`{KEY}(?::[^`]*)?`[^`]{{0,12}}\bdefault\b")


def prose(page: Path) -> str:
    """The page without the generated configuration reference (its defaults are the models' by construction)."""
    text = page.read_text(encoding="utf-8")
    return re.sub(r"<!-- config-reference:start.*?config-reference:end -->", "", text, flags=re.DOTALL)


def model_default(dotted: str) -> Any:
    model: type[BaseModel] = Settings
    *sections, name = dotted.split(".")
    for part in sections:
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), dotted
        model = annotation
    field = model.model_fields[name]
    assert field.default is not PydanticUndefined or field.default_factory is not None, f"{dotted} has no default"
    return field.default if field.default is not PydanticUndefined else field.default_factory()  # type: ignore[call-arg,misc]


def same(stated: str, actual: Any) -> bool:
    if isinstance(actual, bool):
        return stated == str(actual).lower()
    if isinstance(actual, int | float):
        try:
            return float(stated) == float(actual)
        except ValueError:
            return False
    return stated == str(actual)


def stated_defaults() -> list[tuple[str, str, str]]:
    out = []
    for page in PAGES:
        text = prose(page)
        for pattern in STATED:
            out += [(page.name, m["key"], m["value"]) for m in pattern.finditer(text)]
    return sorted(set(out))


def test_the_docs_state_defaults_in_a_form_this_test_reads() -> None:
    """A default named next to a config key must use one of the STATED forms, so the next test checks it."""
    for page in PAGES:
        text = prose(page)
        readable = {m.start() for pattern in STATED for m in pattern.finditer(text)}
        unread = [m.group(0) for m in NEAR_DEFAULT.finditer(text) if m.start() not in readable]
        assert unread == [], f"{page.name}: write '`key` (default `value`)': {unread}"


def test_every_default_the_docs_state_is_the_models_default() -> None:
    found = stated_defaults()
    keys = {key for _, key, _ in found}
    assert {"metrics.listen", "delivery.ordering", "rules.mobile_receiver_pattern"} <= keys, found
    wrong = [
        (page, key, value, model_default(key)) for page, key, value in found if not same(value, model_default(key))
    ]
    assert wrong == []


def test_variable_defaults_in_the_deployment_table_are_the_production_configs() -> None:
    config = (REPO / "config" / "bridge.yaml").read_text()
    rows = re.findall(
        r"^\| `([A-Z_]+)` \| optional, default `([^`]+)`", (REPO / "docs/deployment.md").read_text(), re.M
    )
    assert len(rows) >= 2
    for name, value in rows:
        assert f"${{{name}:-{value}}}" in config, name
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "TOP_GATEWAY_URL": "https://x/router/rest", "TOP_APP_KEY": "k",
           "TOP_APP_SECRET": "s"}  # fmt: skip
    settings = load_settings(REPO / "config" / "bridge.yaml", env=env)
    assert settings.metrics.listen == model_default("metrics.listen"), "the production example keeps the default"


# ----------------------------------------------------------------------------------- gateway codes that pause
GMT8 = timezone(timedelta(hours=8))


def simulator_code(mutate: dict[str, str | None]) -> int:
    """The code the simulated gateway answers a signed request with one system parameter changed (None = left out)."""
    now = time.time()
    params = {
        "method": METHOD, "app_key": "k", "v": API_VERSION, "format": FORMAT, "sign_method": "hmac-sha256",
        "timestamp": datetime.fromtimestamp(now, UTC).astimezone(GMT8).strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    for key, value in mutate.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    if "sign" not in mutate:
        params["sign"] = Signer("s", "hmac-sha256").sign_canonical(canonical_string(params))
    elif mutate["sign"] is None:
        params.pop("sign", None)
    refusal = RequestChecker("k", "s").check_system(params, now)
    assert refusal is not None
    return refusal.code


CAUSES = {  # what the docs call it -> the requests that cause it
    "signature": [{"sign": None}, {"sign": "00"}],
    "app key": [{"app_key": None}, {"app_key": "other"}],
    "timestamp": [{"timestamp": None}, {"timestamp": "2020-01-01 00:00:00"}],
    "API version": [{"v": None}, {"v": "9.9"}],
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_paused_codes_in_the_alert_and_the_docs_are_the_simulators(cause: str) -> None:
    codes = sorted({simulator_code(m) for m in CAUSES[cause]})
    label = "/".join(str(c) for c in codes)
    alert = yaml.safe_load((REPO / "config/prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    [paused] = [r for r in alert if r["alert"] == "CampusBridgePaused"]
    description = " ".join(paused["annotations"]["description"].split())
    assert f"code_{label} = {cause}" in description, description
    monitoring = (REPO / "docs/monitoring.md").read_text()
    assert f"`code_{label}` = {cause}" in monitoring
    trouble = (REPO / "docs/troubleshooting.md").read_text()
    row = ", ".join(f"`code_{c}`" for c in codes)
    assert re.search(rf"^\| {re.escape(row)} \| [^|]*{cause.split(maxsplit=1)[0].lower()}", trouble, re.M | re.I), row


# ---------------------------------------------------------------------------------------------------- the demo
def test_the_demo_rates_the_readme_states() -> None:
    readme = (REPO / "README.md").read_text()
    events = int(re.search(r"at (\d+) events a second\s+\(`--rate`\)", readme)[1])  # type: ignore[index]
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]  # type: ignore[union-attr]
    assert demo.get_default("rate") == events
    limit = int(re.search(r"the configured\s+limit of (\d+)/s", readme)[1])  # type: ignore[index]
    assert load_settings(REPO / "config/demo.yaml").delivery.rate_limit.per_second == limit
    assert "held at" not in readme, "the demo's delivery rate is its traffic, not the limit"
