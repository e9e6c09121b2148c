"""Retention per organisation: an expired stored response is never returned (before the
purge runs too), the hourly purge removes it, and the setting comes from the admin and
odock_apply like audit retention."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from apps.gateway.response_store import ResponseStoreRefused
from apps.responses.models import StoredResponse as Row
from apps.responses.services import stored_response_purge
from apps.responses.store import DatabaseResponseStore
from apps.responses.tasks import stored_response_purge_task
from apps.tenancy.models import Organization
from tests.factories import key_create, odock_apply_text
from tests.responses.factories import stored_make

DAY = 86400


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def store(transactional_db):
    store = DatabaseResponseStore(threads=1)
    yield store
    store.close(wait=True)


def org_of(key) -> Organization:
    return key.project.team.organization


def test_the_default_is_thirty_days(transactional_db):
    assert org_of(key_create().key).response_retention_days == 30


def test_an_expired_response_is_never_returned_before_the_purge(store):
    key = key_create().key
    org = org_of(key)
    now = time.time()
    fresh = stored_make(key, created=round(now - 29 * DAY, 3))
    old = stored_make(key, created=round(now - 31 * DAY, 3))
    middle = stored_make(key, created=round(now - 31 * DAY, 3))
    latest = stored_make(key, previous=middle.id)
    for stored in (fresh, old, middle, latest):
        run(store.save(stored))
    assert run(store.load(org.pk, fresh.id)) == fresh
    assert run(store.load(org.pk, old.id)) is None
    assert run(store.delete(org.pk, old.id)) is False
    assert run(store.chain(org.pk, old.id)) is None
    with pytest.raises(ResponseStoreRefused) as info:
        run(store.conversation(org.pk, latest.id))
    assert info.value.code == "previous_response_not_found"  # not continued without it
    assert Row.objects.filter(pk=old.id).exists()  # not purged yet: only hidden


def test_a_shortened_retention_applies_to_what_is_stored(store):
    key = key_create().key
    org = org_of(key)
    stored = stored_make(key, created=round(time.time() - 10 * DAY, 3))
    run(store.save(stored))
    assert run(store.load(org.pk, stored.id)) == stored
    Organization.objects.filter(pk=org.pk).update(response_retention_days=7)
    assert run(store.load(org.pk, stored.id)) is None
    Organization.objects.filter(pk=org.pk).update(response_retention_days=0)  # forever
    assert run(store.load(org.pk, stored.id)) == stored


def test_the_purge_removes_what_expired_per_organisation(store):
    short, forever, default = key_create().key, key_create().key, key_create().key
    Organization.objects.filter(pk=org_of(short).pk).update(response_retention_days=1)
    Organization.objects.filter(pk=org_of(forever).pk).update(response_retention_days=0)
    now = time.time()
    rows = {
        "short-old": stored_make(short, created=round(now - 2 * DAY, 3)),
        "short-new": stored_make(short, created=round(now - 3600, 3)),
        "forever-old": stored_make(forever, created=round(now - 900 * DAY, 3)),
        "default-old": stored_make(default, created=round(now - 31 * DAY, 3)),
        "default-new": stored_make(default, created=round(now - 29 * DAY, 3)),
    }
    for stored in rows.values():
        run(store.save(stored))
    assert stored_response_purge(batch=1) == 2  # batches of one: the loop ends
    kept = set(Row.objects.values_list("pk", flat=True))
    assert kept == {rows[name].id for name in ("short-new", "forever-old", "default-new")}
    assert stored_response_purge() == 0  # idempotent


def test_the_purge_task_runs_the_service(store):
    key = key_create().key
    run(store.save(stored_make(key, created=round(time.time() - 40 * DAY, 3))))
    assert stored_response_purge_task.apply().get() == 1
    assert not Row.objects.exists()


def test_the_purge_cutoff_is_exact(store):
    key = key_create().key
    now = datetime.now(UTC)
    at_limit = stored_make(key, created=(now - timedelta(days=30)).timestamp())
    inside = stored_make(key, created=(now - timedelta(days=30) + timedelta(seconds=5)).timestamp())
    run(store.save(at_limit))
    run(store.save(inside))
    assert stored_response_purge(now=now) == 1
    assert list(Row.objects.values_list("pk", flat=True)) == [inside.id]


def test_odock_apply_sets_the_retention(tmp_path, transactional_db):
    text = """
organizations:
  - name: acme
    response_retention_days: 90
"""
    odock_apply_text(tmp_path, text)
    assert Organization.objects.get(name="acme").response_retention_days == 90
    assert "updated 0" in odock_apply_text(tmp_path, text)
    odock_apply_text(tmp_path, text.replace("90", "0"))
    assert Organization.objects.get(name="acme").response_retention_days == 0
    odock_apply_text(tmp_path, "organizations:\n  - name: acme\n")  # left out: kept
    assert Organization.objects.get(name="acme").response_retention_days == 0


def test_the_beat_schedule_runs_the_purge_hourly():
    from odock.celery import app

    [entry] = [
        e for e in app.conf.beat_schedule.values() if e["task"] == stored_response_purge_task.name
    ]
    assert entry["schedule"].minute == {23} and len(entry["schedule"].hour) == 24
