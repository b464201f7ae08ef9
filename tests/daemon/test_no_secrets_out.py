"""`bridge run` against a gateway whose answers quote the request URL: no secret and no phone number in its
log lines, no secret in its dead-letter headers (the leak guard searches them too, see tests/leakguard.py)."""

from __future__ import annotations

import re

from harness import APP_SECRET, Harness, note
from rawhttp import bad_status_gateway

SESSION = "98765432109876"


async def test_malformed_status_lines_and_odd_phone_numbers_leave_no_secret_or_number_in_logs_or_dlq(
    harness: Harness,
) -> None:
    h = harness
    await h.start_sim()  # only for the config's defaults: the gateway below answers every call
    async with bad_status_gateway() as url:
        config = h.config(
            gateway={"url": url, "session": SESSION},
            delivery={"retry": {"max_attempts": 3, "initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.05}},
        )
        proc = await h.start_bridge(config)
        # one message that fails at the gateway, one whose phone (written with spaces) fails the rule
        await h.produce([note(1, to="13800138000"), note(2, to="138 0013 8000")], partition=0)
        letters = await h.read_dlq(2)
        await h.wait_committed_to_end()
        assert proc.stop() == 0
    headers = {dict(r.headers)["bridge.reason"].decode(): dict(r.headers) for r in letters}
    assert set(headers) == {"retries_exhausted", "mapping_error"}
    error = headers["retries_exhausted"]["bridge.error"].decode()
    assert "Invalid status" in error  # the cause is kept...
    assert "session=********" in error  # ...with the credentials in the URL it quotes scrubbed
    assert SESSION not in error
    assert not re.search(r"sign=[0-9A-F]{16}", error)
    # the DLQ keeps the record as it was: full numbers (documented), no secrets
    assert "138 0013 8000" in headers["mapping_error"]["bridge.error"].decode()

    log = proc.log_path.read_text(encoding="utf-8")
    assert "Invalid status" in log and "retrying" in log  # the retries were logged with their cause
    for secret in (SESSION, APP_SECRET):
        assert secret not in log
    assert not re.search(r"sign=[0-9A-F]{16}", log)
    assert "13800138000" not in log and "138 0013 8000" not in log
    assert "138****8000" in log
