"""A record that makes a rule's evaluation blow up fails that record only: dead-lettered, committed, and
the daemon goes on (no crash, so no crash loop on the same uncommitted record after every restart)."""

from __future__ import annotations

from harness import NOTE_RULE, Harness, note, wait_until

# Writes the event's `d` as JSON text: on an event nested 1,000 deep that recurses past Python's limit.
DEEP_RULE = {
    "id": "deep",
    "when": "event.kind == 'deep'",
    "message": {"event_type": "push_app", "json_data": {"d": "{{ to_string(event.d) }}"}},
}


async def test_a_record_that_overflows_the_stack_is_dead_lettered_and_the_rest_delivered(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    proc = await h.start_bridge(h.config(rules={"inline": [NOTE_RULE, DEEP_RULE]}))
    deep = b'{"kind": "deep", "d": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    events = [note(i) for i in range(20)]
    await h.produce([*events[:10], deep, *events[10:]], partition=0)
    await h.wait_accepted({e["id"] for e in events})
    (letter,) = await h.read_dlq(1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["bridge.reason"] == "mapping_error"
    assert headers["bridge.rule"] == "deep"
    assert "maximum recursion depth exceeded" in headers["bridge.error"]
    assert letter.value == deep
    await h.wait_committed_to_end()
    assert proc.alive()
    counter = 'bridge_mapping_errors_total{field="json_data.d",rule="deep"}'

    async def counted() -> bool:
        return (await h.metrics(proc)).get(counter) == 1

    await wait_until(counted, 10, "the mapping error counted")  # /metrics may be a moment old (cached)
    assert proc.stop() == 0
