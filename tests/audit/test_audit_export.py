"""Exports of filtered audit records (apps.audit.export): every column, values parsed back
from JSONL and CSV, streamed in keyset chunks (WSGI and ASGI) in constant memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
import warnings
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import JSONField
from django.test import AsyncRequestFactory, Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.audit import export
from apps.audit.models import RequestLog
from apps.audit.selectors import audit_filter_parse, request_log_search
from tests.factories import key_create, org_create, project_create, team_create

ALL_COLUMNS = [f.attname for f in RequestLog._meta.concrete_fields]
JSON_FIELDS = {f.attname for f in RequestLog._meta.concrete_fields if isinstance(f, JSONField)}
EXPORT_URL = reverse("admin:audit_requestlog_export")


@pytest.fixture
def records(db) -> list[RequestLog]:
    org = org_create("acme")
    key = key_create(project_create(team_create(org, "search"), "assistant"), "prod").key
    other = key_create(project_create(team_create(org_create("globex"), "s"), "p"), "k").key
    now = timezone.now().replace(microsecond=654321)
    rows = []
    for i in range(11):
        k = key if i % 4 else other
        team = k.project.team
        rows.append(
            RequestLog.objects.create(
                request_id=f"req-exp-{i:02d}",
                created_at=now - timedelta(seconds=i // 3),  # three rows per timestamp
                organization_id=team.organization_id,
                team_id=team.pk,
                project_id=k.project_id,
                key_id=k.pk,
                key_prefix=k.prefix,
                endpoint="chat.completions",
                model_requested="gpt-4o-mini",
                model_served="claude-3-5-haiku" if i == 1 else "gpt-4o-mini",
                provider="openai-main",
                deployment="openai-main:gpt-4o-mini",
                stream=i % 2 == 0,
                status_code=200 if i % 3 else 502,
                error_code="" if i % 3 else "upstream_error",
                input_tokens=100 + i,
                output_tokens=20,
                cached_tokens=5,
                cost_usd=Decimal("0.000123456789") * (i + 1),
                latency_ms=12.5 + i,
                upstream_ms=10.0 if i % 2 else None,
                overhead_ms=2.5,
                ttft_ms=None,
                client_ip="203.0.113.7" if i % 2 else None,
                user_agent='=HYPERLINK("http://evil")' if i == 5 else 'openai-python/1.0, "q"',
                decisions=[["authenticate", "allow", ""], ["route", "allow", "primary"]],
                attempts=[["openai-main:gpt-4o-mini", 200, "", 9.5]],
                findings=[{"detector": "pii", "action": "redact", "stage": "inspect"}] if i else [],
                finding_types="pii" if i else "",
                content={"mode": "full", "request": 'line1\nline2, "quoted"', "response": "é"}
                if i % 2
                else None,
                chain="w1" if i else "",
                seq=i or None,
                prev_hash="a" * 64,
                hash=f"{i:064d}",
            )
        )
    return rows


def expected_values(row: RequestLog) -> dict[str, Any]:
    """What the export must say for a row, from the model instance re-read from the DB."""
    row.refresh_from_db()
    out = {}
    for name in ALL_COLUMNS:
        value = getattr(row, name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = value
    return out


def newest_first(rows: list[RequestLog]) -> list[RequestLog]:
    return sorted(rows, key=lambda r: (r.created_at, r.pk), reverse=True)


def all_of(qs_filter: dict[str, str] | None = None):
    return request_log_search(filters=audit_filter_parse(qs_filter or {}))


def test_columns_are_every_column_of_the_record():
    assert list(export.COLUMNS) == ALL_COLUMNS
    assert {"cost_usd", "decisions", "content", "chain", "seq", "prev_hash", "hash"} <= set(
        export.COLUMNS
    )
    assert export.JSON_COLUMNS == JSON_FIELDS


def test_jsonl_round_trip(records):
    text = b"".join(export.export_chunks(all_of(), "jsonl", chunk_size=4)).decode()
    lines = text.splitlines()
    assert len(lines) == len(records)
    parsed = [json.loads(line) for line in lines]
    assert [p["request_id"] for p in parsed] == [r.request_id for r in newest_first(records)]
    by_id = {p["request_id"]: p for p in parsed}
    for row in records:
        got = by_id[row.request_id]
        assert list(got) == ALL_COLUMNS
        assert got == expected_values(row)
    assert by_id["req-exp-01"]["cost_usd"] == "0.000246913578"  # Decimal as a string
    assert by_id["req-exp-00"]["content"] is None and by_id["req-exp-00"]["seq"] is None
    assert by_id["req-exp-01"]["content"]["request"] == 'line1\nline2, "quoted"'


def test_csv_round_trip(records):
    text = b"".join(export.export_chunks(all_of(), "csv", chunk_size=4)).decode()
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == ALL_COLUMNS
    rows = list(reader)
    assert [r["request_id"] for r in rows] == [r.request_id for r in newest_first(records)]
    for row in records:
        got = next(r for r in rows if r["request_id"] == row.request_id)
        want = expected_values(row)
        for name in ALL_COLUMNS:
            if name in JSON_FIELDS:
                assert json.loads(got[name]) == want[name], name  # JSON as JSON text
            elif want[name] is None:
                assert got[name] == "", name
            elif isinstance(want[name], bool):
                assert got[name] == ("true" if want[name] else "false"), name
            elif name == "user_agent" and want[name].startswith("="):
                assert got[name] == "'" + want[name]  # no formula for a spreadsheet to run
            else:
                assert got[name] == str(want[name]), name
    assert next(r for r in rows if r["request_id"] == "req-exp-02")["cost_usd"] == "0.000370370367"


def test_empty_export_is_a_header_or_nothing(db):
    nothing = all_of({"org": "no-such-org"})
    assert b"".join(export.export_chunks(nothing, "csv")).decode().strip() == ",".join(ALL_COLUMNS)
    assert b"".join(export.export_chunks(nothing, "jsonl")) == b""


def test_export_follows_the_filters(records):
    text = b"".join(export.export_chunks(all_of({"org": "acme", "status": "5xx"}), "jsonl"))
    got = [json.loads(line)["request_id"] for line in text.splitlines()]
    want = [
        r.request_id
        for r in newest_first(records)
        if r.status_code >= 500 and r.key_prefix != records[0].key_prefix
    ]
    assert got == want and got


def test_export_is_lazy_and_reads_in_bounded_chunks(records):
    request = RequestFactory().get("/")
    with CaptureQueriesContext(connection) as queries:
        response = export.export_response(all_of(), "jsonl", request=request, chunk_size=3)
    assert response.streaming and not response.is_async
    assert not [q for q in queries if "audit_requestlog" in q["sql"]]  # nothing read yet
    with CaptureQueriesContext(connection) as queries:
        chunks = list(response.streaming_content)
    log_sql = [q["sql"] for q in queries if 'FROM "audit_requestlog"' in q["sql"]]
    assert len(chunks) == 4 and len(log_sql) == 4  # 11 rows: 3 + 3 + 3 + 2
    assert all("LIMIT 3" in sql and "COUNT(" not in sql.upper() for sql in log_sql)
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == len(set(lines)) == 11
    assert response["Cache-Control"] == "no-store"


def test_asgi_export_is_an_async_stream_not_a_list(records):
    """Handed a sync iterator, Django's ASGI handler reads it all into a list first (with a
    warning); the export gives it an async iterator pulling one chunk per await."""
    request = AsyncRequestFactory().get("/")
    response = export.export_response(all_of(), "csv", request=request, chunk_size=4)
    assert response.is_async

    async def consume() -> list[bytes]:
        return [chunk async for chunk in response]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "must consume synchronous iterators" would raise
        chunks = async_to_sync(consume)()
    assert len(chunks) == 3  # 11 rows in chunks of 4, the header with the first
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert [r["request_id"] for r in rows] == [r.request_id for r in newest_first(records)]


def export_peak(qs) -> tuple[int, int]:
    """(bytes exported, peak bytes allocated while exporting) for a CSV export of ``qs``."""
    total = 0
    tracemalloc.start()
    try:
        for chunk in export.export_chunks(qs, "csv", chunk_size=200):
            total += len(chunk)
        return total, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_however_many_rows(db):
    """12,000 rows of ~1 KB: six times the rows of a 2,000-row export, the same peak."""
    if connection.vendor != "postgresql":
        pytest.skip("the bulk insert needs PostgreSQL")
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_requestlog (request_id, created_at, key_prefix, endpoint,"
            " model_requested, model_served, provider, deployment, stream, status_code,"
            " error_code, input_tokens, output_tokens, cached_tokens, usage_estimated,"
            " cost_usd, latency_ms, client_disconnected, user_agent, decisions, attempts,"
            " findings, finding_types, content, chain, prev_hash, hash)"
            " SELECT 'mem-' || g, %s - g * interval '1 second', '', 'chat.completions',"
            " 'm', 'm', 'p', 'p:m', false, 200, '', 1, 1, 0, false, 0.5, 1, false, '',"
            " '[]', '[]', '[]', '', jsonb_build_object('request', repeat('x', 1000)),"
            " '', '', '' FROM generate_series(1, 12000) AS g",
            [now],
        )
    small_total, small_peak = export_peak(
        RequestLog.objects.filter(created_at__gte=now - timedelta(seconds=2000))
    )
    big_total, big_peak = export_peak(RequestLog.objects.all())
    assert big_total > 5.5 * small_total > 10_000_000
    assert big_peak < 1.5 * small_peak, (small_peak, big_peak)
    assert big_peak < big_total / 5, (big_peak, big_total)


# --- from the admin ----------------------------------------------------------------------


@pytest.fixture
def staff_client(db) -> Client:
    client = Client()
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    return client


def test_admin_export_carries_the_change_list_filters(staff_client, records):
    page = staff_client.get(reverse("admin:audit_requestlog_changelist") + "?status=5xx")
    html = page.content.decode()
    link = html.split('class="odock-audit-export">', 1)[1].split('href="', 2)[1].split('"')[0]
    link = link.replace("&amp;", "&")
    assert link == f"{EXPORT_URL}?status=5xx&format=csv"

    response = staff_client.get(link)
    assert response.status_code == 200 and response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    listed = [row.request_id for row in page.context["cl"].result_list]
    assert [r["request_id"] for r in rows] == listed
    assert listed == [r.request_id for r in newest_first(records) if r.status_code >= 500]


def test_admin_export_uses_the_default_window_and_search(staff_client, records):
    aged = RequestLog.objects.create(
        request_id="req-exp-aged",
        created_at=timezone.now() - timedelta(days=2),
        endpoint="embeddings",
        status_code=200,
    )
    lines = b"".join(staff_client.get(EXPORT_URL + "?format=jsonl").streaming_content)
    ids = [json.loads(line)["request_id"] for line in lines.splitlines()]
    assert aged.request_id not in ids and len(ids) == len(records)
    by_id = staff_client.get(EXPORT_URL + f"?format=jsonl&q={aged.request_id}")
    assert [
        json.loads(line)["request_id"] for line in b"".join(by_id.streaming_content).splitlines()
    ] == [aged.request_id]
    with_window = staff_client.get(EXPORT_URL + "?format=jsonl&from=7d")
    assert len(b"".join(with_window.streaming_content).splitlines()) == len(records) + 1
