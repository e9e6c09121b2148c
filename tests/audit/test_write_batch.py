"""The shipper's database write: the staging table is created once per connection, and
a batch that fails on a new connection (its rollback takes the table with it) does not
leave the next batch without one."""

from __future__ import annotations

import time

import pytest
from django.db import DataError, connection

from apps.audit.chain import ChainHeads
from apps.audit.models import RequestLog
from apps.audit.writer import prepare, write_batch
from apps.keys.models import VirtualKey
from tests.factories import key_create, org_create, project_create, team_create


def _records(issued, ids: list[str], heads: ChainHeads, **overrides) -> list[dict]:
    key = issued.key
    batch = []
    for request_id in ids:
        rec = {
            "request_id": request_id,
            "created_at": time.time(),
            "organization_id": key.project.team.organization_id,
            "team_id": key.project.team_id,
            "project_id": key.project_id,
            "key_id": key.pk,
            "key_prefix": key.prefix,
            "user_id": None,
            "endpoint": "chat.completions",
            "model_requested": "m",
            "model_served": "m",
            "stream": False,
            "status_code": 200,
            "input_tokens": 1,
            "output_tokens": 1,
            "cached_tokens": 0,
            "usage_estimated": False,
            "cost_usd": "0.000001",
            "latency_ms": 1.0,
            "upstream_ms": 0.5,
            "overhead_ms": 0.5,
            "ttft_ms": None,
            "client_disconnected": False,
            "client_ip": "127.0.0.1",
            "decisions": [],
            "attempts": [],
            "findings": [],
            "content": None,
        }
        rec.update(overrides)
        prepare(rec)
        heads.link(rec)
        batch.append(rec)
    return batch


@pytest.mark.django_db(transaction=True)
def test_a_failed_first_batch_does_not_lose_the_staging_table_for_the_next():
    if connection.vendor != "postgresql":
        pytest.skip("the COPY staging path is PostgreSQL's")
    issued = key_create(project_create(team_create(org_create("ship"))))
    connection.close()  # a new connection: its first batch creates the staging table
    heads = ChainHeads(writer_id="w-ship")
    bad = _records(issued, ["req-bad"], heads, input_tokens=2**40)  # beyond the column
    with pytest.raises(DataError):
        write_batch(bad)
    write_batch(_records(issued, ["req-a", "req-b"], heads))
    write_batch(_records(issued, ["req-c"], heads))  # the table kept: no CREATE this time
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == [
        "req-a",
        "req-b",
        "req-c",
    ]
    assert VirtualKey.objects.get(pk=issued.key.pk).last_used_at is not None
