"""`bridge dlq replay` round trip: rejected messages come back with the same msg_key once the cause is fixed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml
from harness import NOTE_RULE, REPO_ROOT_FOR_TESTS, Harness, note

from bridge.devstack import free_port
from bridge.gateway.simstate import Faults


async def test_dlq_replay_round_trip_redelivers_only_the_failed_messages_with_their_original_msg_keys(
    harness: Harness,
) -> None:
    h = harness
    await h.start_sim(Faults(reject_mobile_prefixes=("1888",)))
    # two rules on the same event: only the rejected one may come back on replay
    second_rule = {
        "id": "note_copy",
        "when": "event.kind == 'note'",
        "message": {
            "event_type": "mobile_receiver",
            "mobile_receiver": "13000000000",
            "json_data": {"id": "copy-{{ event.id }}", "seq": "{{ event.seq }}", "p": 0, "o": 0},
        },
    }

    cfg = h.config(rules={"inline": [NOTE_RULE, second_rule]})
    proc = await h.start_bridge(cfg)
    events = [note(i, to="18880000000" if i % 4 == 0 else f"1300000{i:04d}") for i in range(20)]
    await h.produce(events, partition=0)
    rejected = {e["id"] for e in events if e["to"].startswith("1888")}
    expected_first = {e["id"] for e in events} - rejected | {f"copy-{e['id']}" for e in events}
    await h.wait_accepted(expected_first)
    letters = await h.read_dlq(len(rejected))
    original_keys = {dict(r.headers)["bridge.msg_key"].decode() for r in letters}
    await h.wait_committed_to_end()

    assert h.sim is not None
    h.sim.state.set_faults(Faults())  # the cause is fixed: the recipients are accepted now
    copies_before = {k: v["count"] for k, v in h.accepted().items() if k.startswith("copy-")}
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "dlq", "replay", "-c", str(cfg), "--reason", "rejected"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT_FOR_TESTS,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert f"replayed {len(rejected)}" in r.stdout
    got = await h.wait_accepted(rejected)
    assert {got[i]["msg_key"] for i in rejected} == original_keys, "replay keeps the original msg_keys"
    await h.wait_committed_to_end()
    copies_after = {k: v["count"] for k, v in h.accepted().items() if k.startswith("copy-")}
    assert copies_after == copies_before, "the rule that had succeeded did not send again"
    m = await h.metrics(proc)
    assert m['bridge_messages_total{outcome="delivered",rule="note"}'] == 20


def test_dlq_commands_with_the_broker_unreachable_print_one_line_and_exit_1(tmp_path: Path) -> None:
    # no aiokafka "Unable connect" flood and no "Unclosed AIOKafkaProducer/Consumer": one line naming the servers
    port = free_port()  # nothing listens there
    config = tmp_path / "bridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": f"127.0.0.1:{port}", "topics": ["t1"], "dead_letter_topic": "t1.dlq"},
                "gateway": {"url": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s"},
            }
        )
    )
    for command, purpose in (
        (["dlq", "replay"], "replay dead letters"),
        (["dlq", "replay", "--dry-run"], "read t1.dlq"),
        (["dlq", "inspect"], "read t1.dlq"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "bridge", *command, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 1, (command, r.stdout, r.stderr)
        assert r.stdout == ""
        lines = r.stderr.splitlines()
        assert len(lines) == 1, (command, r.stderr)
        assert lines[0].startswith(f"error: cannot reach Kafka at 127.0.0.1:{port} to {purpose}: "), lines[0]
