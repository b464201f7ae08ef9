"""Reloading the rules of a running bridge: SIGHUP (and `rules.watch`) — atomic, no rebalance, nothing re-sent."""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any

import orjson
import yaml
from harness import NOTE_RULE, Harness, note, wait_until

from bridge.devstack import BridgeProc


def rule_file(h: Harness, action: str, *, broken: bool = False) -> Path:
    rule: dict[str, Any] = copy.deepcopy(NOTE_RULE)
    rule["message"]["action"] = action
    if broken:
        rule["when"] = "event.kind == "  # not a JMESPath expression
    path = h.stack.workdir / "rules" / "notes.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"rules": [rule]}, sort_keys=False))
    return path


def actions(h: Harness) -> dict[str, tuple[str, int]]:
    """Event id -> (action of its message, times received)."""
    assert h.sim is not None
    out = {}
    for rec in h.sim.state.messages.values():
        out[orjson.loads(rec.message["json_data"])["id"]] = (rec.message["action"], rec.count)
    return out


def logs(proc: BridgeProc) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in proc.log_path.read_text().splitlines() if line.startswith("{")]


async def reloads(h: Harness, proc: BridgeProc, result: str) -> float:
    return (await h.metrics(proc)).get(f'bridge_rules_reload_total{{result="{result}"}}', 0.0)


async def test_sighup_swaps_good_rules_keeps_bad_ones_out_and_never_rebalances(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    rule_file(h, "v1")
    cfg = h.config(rules={"inline": [], "rule_files": ["rules/*.yaml"]})
    proc = await h.start_bridge(cfg)
    first = [note(i) for i in range(20)]
    await h.produce(first)
    await h.wait_accepted({e["id"] for e in first})
    assigned = (await h.metrics(proc))['bridge_rebalances_total{kind="assigned"}']

    rule_file(h, "v2")
    proc.signal(signal.SIGHUP)
    await wait_until(lambda: reloads(h, proc, "ok"), 30, "a successful reload")
    second = [note(i) for i in range(20, 40)]
    await h.produce(second)
    await h.wait_accepted({e["id"] for e in second})
    seen = actions(h)
    assert {seen[e["id"]] for e in first} == {("v1", 1)}, "nothing re-sent"
    assert {seen[e["id"]] for e in second} == {("v2", 1)}

    bad = rule_file(h, "v3", broken=True)
    proc.signal(signal.SIGHUP)
    await wait_until(lambda: reloads(h, proc, "failed"), 30, "a failed reload")
    third = [note(i) for i in range(40, 50)]
    await h.produce(third)
    await h.wait_accepted({e["id"] for e in third})
    assert {actions(h)[e["id"]] for e in third} == {("v2", 1)}, "the rules in force stay after a bad reload"
    errors = [x for x in logs(proc) if x["level"] == "error" and x["logger"] == "bridge.reload"]
    assert any(str(bad) in x["msg"] and "rules[0].when" in x["msg"] for x in errors), errors
    assert any(x["msg"].startswith("rules NOT reloaded") for x in errors)

    m = await h.metrics(proc)
    assert m['bridge_rebalances_total{kind="assigned"}'] == assigned, "a reload is not a rebalance"
    assert m["bridge_rules_loaded"] == 1
    assert proc.alive()
    await h.wait_committed_to_end()
    assert proc.stop() == 0


async def test_sighup_names_changes_outside_rules_as_needing_a_restart(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    cfg = h.config()
    proc = await h.start_bridge(cfg)
    data = yaml.safe_load(cfg.read_text())
    data["delivery"]["max_in_flight"] = 7
    data["rules"]["inline"][0]["message"]["action"] = "changed"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    proc.signal(signal.SIGHUP)
    await wait_until(lambda: reloads(h, proc, "ok"), 30, "a successful reload")
    warning = next(x for x in logs(proc) if x["msg"].startswith("config changes outside `rules` need a restart"))
    assert warning["keys"] == ["delivery.max_in_flight"]
    await h.produce([note(1)])
    await h.wait_accepted({"n1"})
    assert actions(h)["n1"] == ("changed", 1)


async def test_rules_watch_reloads_when_a_rule_file_changes(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    path = rule_file(h, "v1")
    cfg = h.config(rules={"inline": [], "rule_files": ["rules/*.yaml"], "watch": True, "watch_interval_seconds": 0.3})
    proc = await h.start_bridge(cfg)
    await h.produce([note(1)])
    await h.wait_accepted({"n1"})
    rule_file(h, "v2")
    assert path.exists()
    await wait_until(lambda: reloads(h, proc, "ok"), 30, "a reload by the watcher")
    await h.produce([note(2)])
    await h.wait_accepted({"n2"})
    assert actions(h)["n2"] == ("v2", 1)
    assert any(x.get("trigger") == "watch" and x["msg"] == "rules reloaded" for x in logs(proc))
