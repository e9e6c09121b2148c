"""The in-process scheduler on the embedded default's SQLite under steady traffic: the
audit writer commits all the time, and the roll-up must still get through (a deferred
SQLite transaction that read before another commit fails with "database is locked" —
before the roll-up took its write lock first, 17 runs in a row failed in 20 s here)."""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from tests.embedded import embedded_gateway, request_log_totals, rollup_totals

SECONDS = 12
CLIENTS = 3


def _traffic(url: str, key: str) -> int:
    ok = 0
    end = time.monotonic() + SECONDS
    with httpx.Client(timeout=15) as client:
        while time.monotonic() < end:
            reply = client.post(
                f"{url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "demo-model", "messages": [{"role": "user", "content": "hi"}]},
            )
            ok += reply.status_code == 200
    return ok


def test_rollups_keep_up_with_traffic_on_sqlite(tmp_path):
    with embedded_gateway(tmp_path, ODOCK_SCHEDULER_SECONDS="1") as (url, key, db):
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            served = sum(pool.map(_traffic, [url] * CLIENTS, [key] * CLIENTS))
        # Rolled up while the traffic ran, not only after it.
        assert rollup_totals(db)[0] > 0
        assert served > 100
        # Every answered request's record reaches the log (the shipper keeps its own pace,
        # so the last ones land a moment after the traffic), and the roll-ups catch up.
        deadline = time.monotonic() + 15
        while request_log_totals(db)[0] != served or rollup_totals(db) != request_log_totals(db):
            assert time.monotonic() < deadline, "the roll-ups did not catch up"
            time.sleep(0.2)
        console = (db.parent / "gateway.log").read_text()
    assert "in-process job" not in console, console[-3000:]  # no failed run
    assert console.count("usage roll-up:") >= SECONDS // 3  # it ran during the traffic
