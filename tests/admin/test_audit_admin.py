"""The request log admin: read-only, and never COUNTs the table."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.audit.admin import RequestLogAdmin
from apps.audit.models import RequestLog
from tests.factories import key_create

CHANGELIST_URL = reverse("admin:audit_requestlog_changelist")


def make_logs(world, count: int) -> list[RequestLog]:
    now = timezone.now()
    return [
        RequestLog.objects.create(
            request_id=f"req-{i:04d}-x",
            created_at=now - timedelta(minutes=i + 1),
            organization=world.org,
            endpoint="embeddings",
            status_code=429 if i % 2 else 200,
        )
        for i in range(count)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "",
        "?status=4xx",
        "?endpoint=embeddings&stream__exact=0",
        "?q=req-0001-x",
        "?q=sk-odock-",
        "?p=2",
    ],
)
def test_changelist_never_counts(admin_client, world, monkeypatch, query):
    monkeypatch.setattr(RequestLogAdmin, "list_per_page", 2)
    make_logs(world, 4)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST_URL + query)

    assert response.status_code == 200
    sql = [q["sql"].upper() for q in queries]
    assert not [s for s in sql if "COUNT(" in s and "audit_requestlog" in s.lower()]


@pytest.mark.django_db
def test_pages_go_on_while_there_are_rows(admin_client, world, monkeypatch):
    monkeypatch.setattr(RequestLogAdmin, "list_per_page", 2)
    logs = make_logs(world, 4)  # plus the world's own log: 5 rows, 3 pages

    first = admin_client.get(CHANGELIST_URL).content.decode()
    assert "req-world" in first and "req-0000-x" in first and "req-0001-x" not in first
    assert "?p=2" in first and "page 1" in first
    last = admin_client.get(CHANGELIST_URL + "?p=3").content.decode()
    assert logs[-1].request_id in last and "?p=4" not in last
    assert admin_client.get(CHANGELIST_URL + "?p=9").status_code == 302  # past the end

    errors = admin_client.get(CHANGELIST_URL + "?status=429").content.decode()
    assert "req-0001-x" in errors and "req-0000-x" not in errors


@pytest.mark.django_db
def test_search_by_request_id_or_key_prefix(admin_client, world):
    make_logs(world, 2)
    other_key = key_create(world.project, "other").key
    RequestLog.objects.create(
        request_id="req-other-key",
        created_at=timezone.now(),
        key=other_key,
        endpoint="chat.completions",
        status_code=200,
    )

    by_id = admin_client.get(CHANGELIST_URL + "?q=req-0001-x").content.decode()
    assert "req-0001-x" in by_id and "req-0000-x" not in by_id and "req-world" not in by_id
    by_key = admin_client.get(CHANGELIST_URL + f"?q={world.issued.key.prefix}").content.decode()
    assert "req-world" in by_key and "req-other-key" not in by_key


@pytest.mark.django_db
def test_request_log_is_read_only(admin_client, world):
    change_url = reverse("admin:audit_requestlog_change", args=[world.log.pk])

    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert world.log.request_id in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(change_url, {"status_code": 500}).status_code == 403
    assert admin_client.get(reverse("admin:audit_requestlog_add")).status_code == 403
    delete_url = reverse("admin:audit_requestlog_delete", args=[world.log.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    world.log.refresh_from_db()
    assert world.log.status_code == 200
