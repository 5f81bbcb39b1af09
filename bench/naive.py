"""The naive baseline the issue names: fetchall, a dict per row, stdlib json, one request at a time.

Same warehouse, same fake server, same events; no state, no retries. Used by bench/run.py."""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time

import duckdb
import requests


def main(warehouse: str, base_url: str, token: str) -> None:
    started = time.perf_counter()
    con = duckdb.connect(warehouse, read_only=True)
    rows = con.execute("select event_id, event, timestamp, email, phone, value, currency, order_id "
                       "from events order by updated_at").fetchall()
    session = requests.Session()
    url = base_url + "/v1.3/event/track/"
    batch: list[dict] = []
    sent = 0

    def post() -> None:
        body = json.dumps({"event_source": "offline", "event_source_id": "7654321098765432109", "data": batch})
        answer = session.post(url, data=body, headers={"Access-Token": token,
                                                       "Content-Type": "application/json"}, timeout=30).json()
        if answer["code"] != 0:
            raise SystemExit(f"naive baseline: TikTok fake answered {answer}")

    for event_id, event, timestamp, email, phone, value, currency, order_id in rows:
        batch.append({
            "event": event, "event_time": int(timestamp.timestamp()), "event_id": str(event_id),
            "user": {"email": hashlib.sha256(email.strip().lower().encode()).hexdigest(),
                     "phone": hashlib.sha256(phone.strip().encode()).hexdigest()},
            "properties": {"value": float(value), "currency": currency, "order_id": str(order_id)},
        })
        if len(batch) == 1000:
            post()
            sent += len(batch)
            batch = []
    if batch:
        post()
        sent += len(batch)
    print(json.dumps({"events_sent": sent, "duration_seconds": time.perf_counter() - started,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
