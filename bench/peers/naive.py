"""A naive bridge, the kind written in a day: aiokafka -> the bench mapping by hand -> signed aiohttp POSTs.

Per fetched batch (up to 500 records): map each record like BENCH_RULE, sign it like the TOP SDKs
(HMAC-SHA256 over the sorted parameters), POST it (at most --in-flight at once, one aiohttp session, uvloop),
retry a failed call a few times, wait for the whole batch, then commit. No ordering, no rate limit, no DLQ.

    python -m bench.peers.naive --bootstrap H:P --topic T --group G --url URL --app-key K --app-secret S
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import uvloop
from aiokafka import AIOKafkaConsumer

GMT8 = timezone(timedelta(hours=8))
METHOD = "alibaba.campus.mc.message.sendmessagetomobile"


def map_record(rec: object) -> str:
    """The BENCH_RULE message of one record, as compact JSON."""
    ev = json.loads(rec.value)  # type: ignore[attr-defined]
    p, o = rec.partition, rec.offset  # type: ignore[attr-defined]
    data = {"id": ev["id"], "seq": str(ev["seq"]), "title": ev["title"], "p": str(p), "o": str(o)}
    msg = {
        "msg_key": str(uuid.uuid4()),
        "event_time_millis": rec.timestamp,  # type: ignore[attr-defined]
        "json_data": json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        "event_type": "mobile_receiver",
        "source": "campus-bench",
        "action": "note",
        "resource_id": ev["id"],
        "resource_url": f"https://campus.example/notes/{ev['id']}",
        "mobile_receiver": ev["to"],
    }
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


async def main(args: argparse.Namespace) -> None:
    secret = args.app_secret.encode()
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    sem = asyncio.Semaphore(args.in_flight)
    connector = aiohttp.TCPConnector(limit=args.in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(rec: object) -> None:
            event = map_record(rec)
            params = {
                "method": METHOD, "app_key": args.app_key, "v": "2.0", "format": "json",
                "sign_method": "hmac-sha256", "timestamp": datetime.now(GMT8).strftime("%Y-%m-%d %H:%M:%S"),
            }  # fmt: skip
            body = {"mobile_receiver_message_event": event}
            canonical = "".join(k + v for k, v in sorted({**params, **body}.items()))
            params["sign"] = hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest().upper()
            async with sem:
                for attempt in range(5):
                    try:
                        async with session.post(args.url, params=params, data=body) as resp:
                            answer = await resp.json(content_type=None)
                        if "error_response" not in answer:
                            return
                    except (aiohttp.ClientError, ValueError):
                        pass
                    await asyncio.sleep(0.1 * (attempt + 1))

        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=500)
                records = [r for rs in fetched.values() for r in rs]
                if records:
                    await asyncio.gather(*(send(r) for r in records))
                    await consumer.commit()
        finally:
            await consumer.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for name in ("bootstrap", "topic", "group", "url", "app-key", "app-secret"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--in-flight", type=int, default=64)
    uvloop.run(main(ap.parse_args()))
