"""The pipeline after a restart: records the commit metadata marks finished are skipped; fan-outs resume."""

from __future__ import annotations

from typing import Any

import orjson

from bridge.kafka.offsets import PartitionOffsets
from bridge.kafka.progress import Partial, Progress, commit_request, decode, items_digest, to_ranges
from bridge.metrics import Metrics
from bridge.models import RecordMeta
from bridge.pipeline import Pipeline
from bridge.rules.loader import compile_rules
from bridge.settings import Settings
from bridge.work import DeadLetter, Job, PartitionState

TOPIC = "campus.events"
TS = 1_700_000_000_000  # the records' timestamp, and the pipeline's "now" (nothing is stale)
RULES: list[dict[str, Any]] = [
    {
        "id": "note",
        "when": "event.kind == 'note'",
        "message": {"event_type": "mobile_receiver", "mobile_receiver": "{{ event.to }}"},
    },
    {
        "id": "class",
        "when": "event.kind == 'class'",
        "for_each": "event.students",
        "message": {"event_type": "mobile_receiver", "mobile_receiver": "{{ item }}"},
    },
]


class Engine:
    """Collects what the pipeline submits (the EnginePort the pipeline talks to)."""

    unfinished = 0

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.letters: list[DeadLetter] = []

    def submit(self, job: Job) -> None:
        self.jobs.append(job)

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        return True


def world() -> tuple[Pipeline, Engine, Metrics]:
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": [TOPIC]},
            "gateway": {"app_key": "k", "app_secret": "s"},
        }
    )
    engine, metrics = Engine(), Metrics()
    return Pipeline(settings, compile_rules(RULES), engine, metrics, wall_ms=lambda: TS), engine, metrics


def feed(pipeline: Pipeline, part: PartitionState, offset: int, event: Any) -> None:
    raw = event if isinstance(event, bytes) else orjson.dumps(event)
    pipeline.take(part, RecordMeta(TOPIC, 0, offset, TS), raw)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def students(n: int) -> list[str]:
    return [f"1380000{i:04d}" for i in range(n)]


def test_records_marked_finished_are_never_mapped_nor_sent_and_stay_in_the_next_commit() -> None:
    pipeline, engine, metrics = world()
    restored = Progress(10, ((11, 13), (14, 15)))
    part = PartitionState(TOPIC, 0, PartitionOffsets(100, 10, "v1:..."), restored=restored)
    for offset in range(10, 16):
        feed(pipeline, part, offset, {"kind": "note", "to": f"1390000000{offset % 10}"})
    feed(pipeline, part, 16, b"not json")  # beyond what the metadata knew: handled as usual
    assert [j.record.meta.offset for j in engine.jobs] == [10, 13, 15]
    assert [lt.record.meta.offset for lt in engine.letters] == [16]
    assert sample(metrics, "bridge_records_skipped_total", reason="already_finished") == 3
    req = commit_request(part.offsets, part.restored, 4000)
    assert req is not None and req.offset == 10
    progress = decode(req.metadata, 10).progress
    assert progress is not None and progress.finished == ((11, 13), (14, 15))
    assert part.restored is None  # offset 15 reached the end of what it knew: dropped


def test_an_invalid_record_dead_lettered_before_the_restart_is_not_dead_lettered_again() -> None:
    pipeline, engine, _ = world()
    part = PartitionState(TOPIC, 0, PartitionOffsets(100, 0), restored=Progress(0, ((1, 2),)))
    feed(pipeline, part, 0, {"kind": "note", "to": "13900000000"})
    feed(pipeline, part, 1, b"\xff not json")
    assert engine.letters == [] and len(engine.jobs) == 1


def test_a_partly_delivered_fanout_sends_only_the_messages_not_final_before() -> None:
    pipeline, engine, _ = world()
    event = {"kind": "class", "students": students(300)}
    # first life: map it, deliver 250 of 300, commit
    part = PartitionState(TOPIC, 0, PartitionOffsets(100, 0))
    feed(pipeline, part, 0, event)
    assert len(engine.jobs) == 300
    assert [j.index for j in engine.jobs] == list(range(300))
    for job in engine.jobs[:250]:
        job.record.complete(job.index)
    req = commit_request(part.offsets, None, 4000)
    assert req is not None and req.offset == 0 and len(req.metadata) < 100
    sent_first = {j.message.msg_key for j in engine.jobs}
    # second life: the commit is all that is left
    pipeline2, engine2, metrics2 = world()
    restored = decode(req.metadata, 0).progress
    assert restored is not None
    part2 = PartitionState(TOPIC, 0, PartitionOffsets(100, 0, req.metadata), restored=restored)
    feed(pipeline2, part2, 0, event)
    assert [j.index for j in engine2.jobs] == list(range(250, 300))
    assert {j.message.msg_key for j in engine2.jobs} <= sent_first  # same msg_keys as the first time
    assert sample(metrics2, "bridge_messages_skipped_total", reason="already_finished") == 250
    # and a crash now keeps all 250 (plus what is delivered meanwhile) in the metadata
    engine2.jobs[0].record.complete(engine2.jobs[0].index)
    req2 = commit_request(part2.offsets, part2.restored, 4000)
    assert req2 is not None
    again = decode(req2.metadata, 0).progress
    assert again is not None
    assert again.partial[0].done == ((0, 251),)
    for job in engine2.jobs:
        job.record.complete(job.index)
    assert part2.offsets.commit_point() == 1


def test_fanout_indices_are_ignored_when_the_record_maps_differently_now() -> None:
    pipeline, engine, metrics = world()
    event = {"kind": "class", "students": students(5)}
    other_digest = items_digest(["x"] * 5)
    restored = Progress(0, (), {0: Partial(other_digest, 5, to_ranges([0, 1, 2]))})
    part = PartitionState(TOPIC, 0, PartitionOffsets(100, 0), restored=restored)
    feed(pipeline, part, 0, event)
    assert [j.index for j in engine.jobs] == [0, 1, 2, 3, 4]  # everything sent: the indices meant other items
    assert sample(metrics, "bridge_messages_skipped_total", reason="already_finished") == 0
