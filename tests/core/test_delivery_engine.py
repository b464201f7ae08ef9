"""DeliveryEngine in-process: a scripted fake gateway, a recording dead-letter port, all on virtual time.

Every test runs on the `vtime` loop (see virtual_time.py): sleeps, backoffs, bans and probes take no real time
and happen in a deterministic order, so the assertions can be exact about *when* calls happened. Every fake
gateway call and every pause notification takes a number from one shared sequence, which gives the order of
events where several share one instant.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from itertools import pairwise

import pytest
from engine_rig import (
    DELIVERED,
    HTTP_503,
    REJECTED,
    RETRYABLE,
    RULE,
    SYSTEMIC,
    RigFactory,
    phone,
    throttled,
    until,
)
from virtual_time import VirtualTime

from bridge.delivery import DEFAULT_BAN_SECONDS
from bridge.models import Verdict
from bridge.work import DeadLetter


# --------------------------------------------------------------------------- delivered
async def test_delivered_messages_complete_their_records_and_advance_the_commit_point(make_rig: RigFactory) -> None:
    rig = await make_rig()
    jobs = [rig.submit(phone(i)) for i in range(3)]
    assert rig.engine.unfinished == 3
    assert await rig.engine.wait_idle(5)
    assert rig.committable() == 3
    assert [c.verdict for c in rig.gateway.calls] == [Verdict.DELIVERED] * 3
    assert [j.attempts for j in jobs] == [1, 1, 1]
    assert rig.dlq.letters == []
    assert rig.engine.unfinished == 0
    assert rig.sample("bridge_messages_total", rule=RULE, outcome="delivered") == 3
    assert rig.sample("bridge_gateway_requests_total", verdict="delivered", code="0", sub_code_family="") == 3
    assert rig.sample("bridge_event_to_delivery_seconds_count", rule=RULE) == 3
    assert rig.sample("bridge_queued_messages") == 0
    assert rig.sample("bridge_in_flight_messages") == 0


async def test_a_record_with_several_messages_commits_when_its_last_message_is_final(make_rig: RigFactory) -> None:
    rig = await make_rig(initial_backoff=0.1)
    first, second = rig.submit_record([phone(1), phone(2)])
    rig.gateway.script(second, RETRYABLE, DELIVERED)
    await until(lambda: rig.gateway.delivered(first))
    assert rig.committable() == 0
    assert await rig.engine.wait_idle(5)
    assert rig.committable() == 1


# --------------------------------------------------------------------------- ordering
@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed={s}")
async def test_messages_to_one_recipient_keep_source_order_while_recipients_run_concurrently(
    make_rig: RigFactory, seed: int
) -> None:
    rng = random.Random(seed)
    rig = await make_rig(
        max_in_flight=8,
        max_attempts=10,
        initial_backoff=0.005,
        max_backoff=0.05,
        latency=lambda _: rng.uniform(0.0, 0.02),
        rand=rng.random,
    )
    recipients = [phone(i) for i in range(6)]
    submitted: dict[str, list[str]] = defaultdict(list)
    for _ in range(12):  # batches arrive while earlier ones are being delivered
        for _ in range(10):
            job = rig.submit(rng.choice(recipients), partition=rng.randrange(3))
            if rng.random() < 0.3:
                rig.gateway.script(job, *[rng.choice([RETRYABLE, HTTP_503])] * rng.randint(1, 3))
            submitted[job.message.mobile_receiver or ""].append(job.message.msg_key)
        await asyncio.sleep(rng.uniform(0.0, 0.01))
    assert await rig.engine.wait_idle(60)

    for recipient in recipients:
        calls = [c for c in rig.gateway.calls if c.recipient == recipient]
        for before, after in pairwise(calls):
            assert after.seq > before.end_seq, f"two calls to {recipient} overlapped"
        delivered = [c.msg_key for c in calls if c.verdict is Verdict.DELIVERED]
        assert delivered == submitted[recipient]
    assert rig.gateway.max_in_flight > 1
    assert rig.dlq.letters == []
    for partition, part in rig.parts.items():
        assert part.offsets.commit_point() == rig.records_tracked(partition)


async def test_partition_ordering_sends_one_message_per_partition_at_a_time(make_rig: RigFactory) -> None:
    rng = random.Random(11)
    rig = await make_rig(ordering="partition", latency=lambda _: rng.uniform(0.001, 0.01))
    submitted: dict[int, list[str]] = defaultdict(list)
    partition_of: dict[str, int] = {}
    for i in range(30):
        job = rig.submit(phone(i), partition=i % 3)  # every message to a different recipient
        submitted[i % 3].append(job.message.msg_key)
        partition_of[job.message.msg_key] = i % 3
    assert await rig.engine.wait_idle(30)
    for partition in range(3):
        calls = [c for c in rig.gateway.calls if partition_of[c.msg_key] == partition]
        assert [c.msg_key for c in calls] == submitted[partition]
        for before, after in pairwise(calls):
            assert after.seq > before.end_seq
    assert rig.gateway.max_in_flight == 3  # the partitions ran side by side


async def test_no_ordering_sends_messages_to_one_recipient_concurrently(make_rig: RigFactory) -> None:
    rig = await make_rig(ordering="none", max_in_flight=4, latency=0.01)
    jobs = [rig.submit(phone(1)) for _ in range(8)]
    assert all(j.key is None for j in jobs)
    assert await rig.engine.wait_idle(5)
    assert rig.gateway.max_in_flight == 4
    assert all(rig.gateway.delivered(j) for j in jobs)
    assert rig.committable() == 8


# --------------------------------------------------------------------------- retryable
async def test_retryable_is_retried_with_backoff_and_the_same_msg_key_without_blocking_others(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(initial_backoff=0.1, max_backoff=10.0, max_attempts=5)
    slow = rig.submit(phone(1))
    behind = rig.submit(phone(1))
    others = [rig.submit(phone(2 + i % 3)) for i in range(9)]
    rig.gateway.script(slow, HTTP_503, RETRYABLE, HTTP_503, DELIVERED)
    assert await rig.engine.wait_idle(10)

    calls = rig.gateway.calls_for(slow)
    assert [c.verdict for c in calls] == [Verdict.RETRYABLE] * 3 + [Verdict.DELIVERED]
    assert {c.msg_key for c in calls} == {slow.message.msg_key}
    assert slow.attempts == 4
    # full jitter with rand() = 1: the ceiling itself, doubling from initial_backoff_seconds
    assert [after.start - before.end for before, after in pairwise(calls)] == pytest.approx([0.1, 0.2, 0.4])
    # the other recipients were all served while it waited for its first retry
    assert max(c.end for o in others for c in rig.gateway.calls_for(o)) < calls[1].start
    # the next message to the same recipient waited for it
    [next_call] = rig.gateway.calls_for(behind)
    assert next_call.seq > calls[-1].end_seq
    assert rig.sample("bridge_retries_total", reason="http_503") == 2
    assert rig.sample("bridge_retries_total", reason="15") == 1
    assert rig.dlq.letters == []
    assert rig.committable() == 11


async def test_retries_exhausted_gives_exactly_one_dead_letter_and_frees_the_recipient(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(max_attempts=3)
    doomed = rig.submit(phone(1))
    behind = rig.submit(phone(1))
    rig.gateway.script(doomed, RETRYABLE, RETRYABLE, RETRYABLE)
    assert await rig.engine.wait_idle(10)

    calls = rig.gateway.calls_for(doomed)
    assert len(calls) == 3
    [letter] = rig.dlq.letters
    assert letter.reason == "retries_exhausted"
    assert letter.attempts == 3
    assert letter.record is doomed.record
    assert letter.rule == RULE
    assert letter.msg_key == doomed.message.msg_key
    assert (letter.code, letter.sub_code) == (15, "isp.remote-service-timeout")
    assert letter.message == RETRYABLE.describe()
    assert letter.payload == doomed.message.to_json()
    assert letter.first_attempt_ms == 1_700_000_000_000 + int(calls[0].start * 1000)
    assert letter.last_attempt_ms == 1_700_000_000_000 + int(calls[-1].start * 1000)
    assert rig.gateway.delivered(behind)
    assert rig.committable() == 2
    assert rig.sample("bridge_dead_letters_total", reason="retries_exhausted") == 1
    assert rig.sample("bridge_messages_total", rule=RULE, outcome="dead_lettered") == 1
    assert rig.sample("bridge_messages_total", rule=RULE, outcome="delivered") == 1


async def test_retryable_past_max_age_is_dead_lettered_with_reason_max_age(make_rig: RigFactory) -> None:
    rig = await make_rig(max_attempts=100, max_age=1.0, initial_backoff=0.3, max_backoff=0.3)
    job = rig.submit(phone(1))
    rig.gateway.default = lambda _: RETRYABLE
    assert await rig.engine.wait_idle(10)
    calls = rig.gateway.calls_for(job)
    [letter] = rig.dlq.letters
    assert letter.reason == "max_age"
    assert letter.attempts == len(calls) == 5
    assert calls[-1].end - calls[0].start >= 1.0 > calls[-2].end - calls[0].start
    assert rig.sample("bridge_dead_letters_total", reason="max_age") == 1


@pytest.mark.parametrize("vtime", [0.0], indirect=True, ids=["clock-starts-at-zero"])
async def test_max_age_counts_from_the_first_attempt_even_when_the_clock_read_zero(make_rig: RigFactory) -> None:
    """An injected clock may read 0.0 at the first attempt; that is a time, not "no time"."""
    rig = await make_rig(max_attempts=100, max_age=1.0, initial_backoff=0.3, max_backoff=0.3, latency=0.0)
    rig.submit(phone(1))
    rig.gateway.default = lambda _: RETRYABLE
    assert await rig.engine.wait_idle(60)
    [letter] = rig.dlq.letters
    assert (letter.reason, letter.attempts) == ("max_age", 5)


# --------------------------------------------------------------------------- rejected
async def test_rejected_is_dead_lettered_at_once_and_the_recipient_goes_on(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.dlq.hold = asyncio.Event()  # a slow dead-letter topic
    bad = rig.submit(phone(1))
    good = rig.submit(phone(1))
    rig.gateway.script(bad, REJECTED)
    await until(lambda: rig.gateway.delivered(good))
    assert len(rig.gateway.calls_for(bad)) == 1
    assert rig.committable() == 0  # the rejected record waits for its dead letter
    assert rig.engine.unfinished == 1

    rig.dlq.hold.set()
    assert await rig.engine.wait_idle(5)
    [letter] = rig.dlq.letters
    assert (letter.reason, letter.attempts, letter.code, letter.sub_code) == (
        "rejected",
        1,
        15,
        "isv.invalid-parameter",
    )
    assert letter.message == REJECTED.describe()
    assert rig.committable() == 2
    assert rig.sample("bridge_dead_letters_total", reason="rejected") == 1


async def test_dead_letter_of_an_invalid_record_completes_it_after_publishing(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.dlq.hold = asyncio.Event()
    letter = DeadLetter(rig.record(pending=1), "not_json", "not JSON: unexpected character")
    rig.engine.dead_letter(letter)
    assert rig.engine.unfinished == 1
    assert not await rig.engine.wait_idle(1)
    assert rig.committable() == 0
    rig.dlq.hold.set()
    assert await rig.engine.wait_idle(5)
    assert rig.dlq.letters == [letter]
    assert rig.committable() == 1
    assert rig.sample("bridge_dead_letters_total", reason="not_json") == 1
    assert rig.gateway.calls == []


# --------------------------------------------------------------------------- throttled
async def test_throttled_bans_every_sender_until_the_ban_ends(make_rig: RigFactory) -> None:
    rig = await make_rig(max_in_flight=4)
    jobs = [rig.submit(phone(i)) for i in range(20)]
    rig.gateway.script(jobs[0], throttled(2.0))
    await until(lambda: rig.engine.cooling_down)
    assert rig.sample("bridge_throttle_cooldown_active") == 1
    assert await rig.engine.wait_idle(10)

    [ban] = [c for c in rig.gateway.calls if c.verdict is Verdict.THROTTLED]
    later = [c for c in rig.gateway.calls if c.seq > ban.end_seq]
    assert later
    assert min(c.start for c in later) >= ban.end + 2.0
    assert [c.verdict for c in rig.gateway.calls_for(jobs[0])] == [Verdict.THROTTLED, Verdict.DELIVERED]
    assert jobs[0].attempts == 1
    assert all(rig.gateway.delivered(j) for j in jobs)
    assert rig.dlq.letters == []
    assert rig.committable() == 20
    assert rig.engine.limiter.bans == 1
    assert rig.sample("bridge_throttle_bans_total") == 1
    assert rig.sample("bridge_retries_total", reason="throttled") == 1
    await until(lambda: rig.sample("bridge_throttle_cooldown_active") == 0)


async def test_throttles_are_not_charged_as_attempts_and_never_dead_letter(make_rig: RigFactory) -> None:
    rig = await make_rig(max_attempts=2)
    job = rig.submit(phone(1))
    rig.gateway.script(job, RETRYABLE, throttled(0.5), throttled(0.5), throttled(0.5), DELIVERED)
    assert await rig.engine.wait_idle(10)
    assert rig.gateway.delivered(job)
    assert job.attempts == 2
    assert rig.dlq.letters == []
    assert rig.engine.limiter.bans == 3
    assert rig.sample("bridge_retries_total", reason="throttled") == 3


async def test_throttled_without_ban_seconds_bans_for_the_default(make_rig: RigFactory) -> None:
    rig = await make_rig()
    job = rig.submit(phone(1))
    rig.gateway.script(job, throttled(None))
    assert await rig.engine.wait_idle(10)
    ban, retry = rig.gateway.calls_for(job)
    assert retry.start == pytest.approx(ban.end + DEFAULT_BAN_SECONDS)


async def test_rate_limit_spaces_calls_after_the_first_burst(make_rig: RigFactory) -> None:
    rig = await make_rig(rate=10, burst=2, latency=0.0)
    t0 = rig.vt.time()
    for i in range(10):
        rig.submit(phone(i))
    assert await rig.engine.wait_idle(10)
    starts = sorted(c.start - t0 for c in rig.gateway.calls)
    assert starts == pytest.approx([0, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert rig.sample("bridge_rate_limit_per_second") == 10


# --------------------------------------------------------------------------- systemic
async def test_systemic_error_pauses_with_one_probe_then_resumes_and_delivers_everything(
    make_rig: RigFactory, vtime: VirtualTime
) -> None:
    rig = await make_rig(max_in_flight=4, max_attempts=2, probe=0.01, max_probe=10.0)
    fixed_at = vtime.time() + 0.5  # the operator fixes the credentials then
    rig.gateway.default = lambda _: SYSTEMIC if vtime.time() < fixed_at else DELIVERED
    seen: list[tuple[str | None, str | None, float | None]] = []
    rig.on_pause_extra = lambda reason: seen.append(
        (reason, rig.engine.paused_reason, rig.sample("bridge_paused", reason="code_25"))
    )
    jobs = [rig.submit(phone(i)) for i in range(12)]
    assert await rig.engine.wait_idle(30)

    assert [reason for _, _, reason in rig.pauses] == ["code_25", None]
    assert seen == [("code_25", "code_25", 1.0), (None, None, 0.0)]
    (paused_seq, paused_at, _), (resumed_seq, _, _) = rig.pauses
    probes = [c for c in rig.gateway.calls if paused_seq < c.seq < resumed_seq]
    assert len({c.msg_key for c in probes}) == 1, "only the probe message may be sent while paused"
    assert [c.verdict for c in probes] == [Verdict.SYSTEMIC] * (len(probes) - 1) + [Verdict.DELIVERED]
    gaps = [probes[0].start - paused_at] + [after.start - before.end for before, after in pairwise(probes)]
    assert gaps == pytest.approx([0.01 * 2**i for i in range(len(probes))])
    assert all(rig.gateway.delivered(j) for j in jobs)
    assert [j.attempts for j in jobs] == [1] * 12  # systemic answers are not the message's fault
    assert rig.dlq.letters == []
    assert rig.committable() == 12
    assert rig.engine.paused_reason is None


async def test_callers_waiting_on_the_rate_limiter_when_a_pause_starts_do_not_call(make_rig: RigFactory) -> None:
    rig = await make_rig(rate=20, burst=1, max_in_flight=8, probe=0.3, max_probe=0.3)
    first = rig.submit(phone(0))
    jobs = [first] + [rig.submit(phone(i)) for i in range(1, 8)]  # seven wait for their slots, 50 ms apart
    rig.gateway.script(first, SYSTEMIC, DELIVERED)
    assert await rig.engine.wait_idle(30)
    (paused_seq, _, _), (resumed_seq, _, _) = rig.pauses
    during = [c for c in rig.gateway.calls if paused_seq < c.seq < resumed_seq]
    assert [c.msg_key for c in during] == [first.message.msg_key]
    assert all(rig.gateway.delivered(j) for j in jobs)
    assert rig.committable() == 8


async def test_probe_answers_that_do_not_judge_the_credentials_keep_probing(make_rig: RigFactory) -> None:
    rig = await make_rig(max_attempts=2)
    job = rig.submit(phone(1))
    rig.gateway.script(job, SYSTEMIC, RETRYABLE, HTTP_503, RETRYABLE, SYSTEMIC, DELIVERED)
    assert await rig.engine.wait_idle(30)
    assert [r for _, _, r in rig.pauses] == ["code_25", None]
    assert len(rig.gateway.calls_for(job)) == 6
    assert rig.gateway.delivered(job)
    assert rig.dlq.letters == []


async def test_a_probe_rejected_for_its_own_content_resumes_and_dead_letters_it(make_rig: RigFactory) -> None:
    rig = await make_rig()
    probe = rig.submit(phone(1))
    behind = rig.submit(phone(1))
    rig.gateway.script(probe, SYSTEMIC, REJECTED)
    assert await rig.engine.wait_idle(30)
    assert [r for _, _, r in rig.pauses] == ["code_25", None]
    [letter] = rig.dlq.letters
    assert (letter.reason, letter.msg_key) == ("rejected", probe.message.msg_key)
    assert rig.gateway.delivered(behind)
    assert rig.committable() == 2


async def test_a_probe_waits_out_a_gateway_ban_like_every_other_call(make_rig: RigFactory) -> None:
    """A throttled answer to a probe opens a ban; the next probe must not call the gateway during it."""
    rig = await make_rig(probe=0.01)
    job = rig.submit(phone(1))
    rig.gateway.script(job, SYSTEMIC, throttled(5.0), DELIVERED)
    assert await rig.engine.wait_idle(30)
    _, banned, retried = rig.gateway.calls_for(job)
    assert banned.verdict is Verdict.THROTTLED
    assert retried.start >= banned.end + 5.0, f"probe called {retried.start - banned.end:.3f} s into a 5 s gateway ban"


# --------------------------------------------------------------------------- revoke
async def test_revoked_partition_drops_its_queued_jobs_and_others_continue(make_rig: RigFactory) -> None:
    rig = await make_rig(max_in_flight=2, latency=0.01)
    lost = [rig.submit(phone(i), partition=0) for i in range(5)]
    kept = [rig.submit(phone(100 + i), partition=1) for i in range(5)]
    await until(lambda: len(rig.gateway.calls) == 2)  # lost[0] and lost[1] are in flight
    revoked_at = rig.marker()
    rig.part(0).revoked = True
    assert await rig.engine.wait_partitions_quiet([rig.part(0)], 1.0)
    assert await rig.engine.wait_idle(5)

    lost_keys = {j.message.msg_key for j in lost}
    assert not [c for c in rig.gateway.calls if c.seq > revoked_at and c.msg_key in lost_keys]
    assert [rig.gateway.delivered(j) for j in lost] == [True, True, False, False, False]
    assert rig.committable(0) == 2  # the dropped records are not completed: the new owner redoes them
    assert rig.part(0).offsets.in_progress == 3
    assert all(rig.gateway.delivered(j) for j in kept)
    assert rig.committable(1) == 5
    assert rig.engine.unfinished == 0
    assert rig.sample("bridge_messages_total", rule=RULE, outcome="delivered") == 7


async def test_revoked_job_waiting_behind_another_partitions_message_is_dropped(make_rig: RigFactory) -> None:
    rig = await make_rig(latency=0.05)
    head = rig.submit(phone(1), partition=1)
    behind = rig.submit(phone(1), partition=0)
    await until(lambda: rig.gateway.in_flight == 1)
    rig.part(0).revoked = True
    assert await rig.engine.wait_idle(5)
    assert rig.gateway.delivered(head)
    assert rig.gateway.calls_for(behind) == []
    assert rig.committable(0) == 0
    assert rig.engine.unfinished == 0


# --------------------------------------------------------------------------- accounting and shutdown
async def test_unfinished_counts_jobs_until_final_and_wait_idle_times_out_meanwhile(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.gateway.hold = asyncio.Event()
    for i in range(3):
        rig.submit(phone(i))
    assert rig.engine.unfinished == 3
    assert rig.sample("bridge_queued_messages") == 3
    assert not await rig.engine.wait_idle(0.5)
    assert rig.engine.in_flight == 3
    assert rig.sample("bridge_in_flight_messages") == 3

    rig.gateway.hold.set()
    assert await rig.engine.wait_idle(5)
    assert rig.engine.unfinished == 0
    assert rig.sample("bridge_queued_messages") == 0


async def test_stop_lets_in_flight_calls_finish_and_sends_nothing_more(make_rig: RigFactory) -> None:
    rig = await make_rig(max_in_flight=2, latency=1.0)
    for i in range(6):
        rig.submit(phone(i))
    await until(lambda: rig.gateway.in_flight == 2)
    assert await rig.engine.stop(5.0) is True
    assert [c.verdict for c in rig.gateway.calls] == [Verdict.DELIVERED] * 2
    assert rig.committable() == 2
    assert await rig.engine.stop(5.0) is True  # idempotent
    assert len(rig.gateway.calls) == 2


async def test_stop_cancels_calls_that_outlast_its_timeout(make_rig: RigFactory, vtime: VirtualTime) -> None:
    rig = await make_rig(max_in_flight=1, latency=100.0)
    rig.submit(phone(1))
    await until(lambda: rig.gateway.in_flight == 1)
    stopped_at = vtime.time()
    assert await rig.engine.stop(1.0) is False
    assert vtime.time() - stopped_at < 2.0
    [call] = rig.gateway.calls
    assert call.cancelled
    assert rig.committable() == 0


async def test_stop_while_paused_returns_and_leaves_offsets_alone(make_rig: RigFactory) -> None:
    rig = await make_rig(probe=0.5)
    job = rig.submit(phone(1))
    rig.submit(phone(2))
    rig.gateway.script(job, SYSTEMIC, SYSTEMIC, SYSTEMIC)
    rig.gateway.default = lambda _: SYSTEMIC
    await until(lambda: rig.engine.paused_reason is not None)
    assert await rig.engine.stop(1.0) is True
    assert rig.committable() == 0
    assert rig.dlq.letters == []


# --------------------------------------------------------------------------- back-pressure for sources
async def test_wait_drained_to_returns_once_the_unfinished_work_is_down_to_the_mark(
    make_rig: RigFactory, vtime: VirtualTime
) -> None:
    rig = await make_rig(max_in_flight=2, latency=0.1)
    for i in range(10):
        rig.submit(phone(i))
    start = vtime.time()
    assert not await rig.engine.wait_drained_to(4, 0.15)  # 2 calls at a time, 0.1 s each: not yet
    assert await rig.engine.wait_drained_to(4, 10)
    assert rig.engine.unfinished == 4
    assert vtime.time() - start == pytest.approx(0.3)  # the 6th message was delivered at 0.3 s
    assert await rig.engine.wait_drained_to(5, 0)  # already below: at once
