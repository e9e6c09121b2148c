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
from tests.factories import audit_record, key_create, org_create, project_create, team_create


def _records(issued, ids: list[str], heads: ChainHeads, **overrides) -> list[dict]:
    batch = []
    for request_id in ids:
        rec = audit_record(issued.key, request_id, time.time(), **overrides)
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
    assert connection._odock_staging_for is connection.connection  # marked after a commit


@pytest.mark.django_db
def test_inside_an_outer_transaction_the_staging_table_is_never_assumed():
    """An outer transaction (a test's, or a caller's) may roll the CREATE back after
    ``write_batch`` returns: the next batch must create the table again, not assume it."""
    if connection.vendor != "postgresql":
        pytest.skip("the COPY staging path is PostgreSQL's")
    issued = key_create(project_create(team_create(org_create("ship-outer"))))
    heads = ChainHeads(writer_id="w-ship-outer")
    write_batch(_records(issued, ["req-o1"], heads))
    assert connection._odock_staging_for is None
    with connection.cursor() as cursor:  # what the outer rollback would do
        cursor.execute("DROP TABLE IF EXISTS pg_temp.odock_audit_staging")
    write_batch(_records(issued, ["req-o2"], heads))
    assert RequestLog.objects.filter(request_id__in=["req-o1", "req-o2"]).count() == 2
