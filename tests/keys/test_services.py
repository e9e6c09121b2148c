"""key_update (odock_apply's and the admin's change path), key_secret_validate, and revoke /
suspend committing with their change-log row."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from django.db import DatabaseError, connection

from apps.configlog.models import ConfigChange, Scope
from apps.keys.models import VirtualKey
from apps.keys.services import (
    key_revoke,
    key_secret_matches,
    key_secret_validate,
    key_suspend,
    key_update,
)
from tests.factories import key_create

SECRET = "sk-odock-a-chosen-secret-123"


def test_a_chosen_secret_must_look_like_a_key():
    key_secret_validate(secret=SECRET)
    with pytest.raises(ValueError, match="must start with 'sk-odock-'"):
        key_secret_validate(secret="hunter2")


@pytest.mark.django_db
def test_key_update_stores_a_new_secret_as_its_digest_and_saves_only_changes():
    key = key_create().key
    expires = datetime(2099, 1, 1, tzinfo=UTC)

    key, changed = key_update(key=key, data={"expires_at": expires}, secret=SECRET)

    assert changed == ["digest", "prefix", "expires_at"]
    key.refresh_from_db()
    assert key_secret_matches(key=key, secret=SECRET) and key.expires_at == expires
    assert key_update(key=key, data={"expires_at": expires}, secret=SECRET)[1] == []


# --- revoke, suspend: the key and its change-log row commit together ----------------------

_REFUSE = {
    "postgresql": (
        [
            "CREATE FUNCTION odock_test_refuse() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'change log refused (test)'; END $$",
            "CREATE TRIGGER odock_test_refuse BEFORE INSERT ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION odock_test_refuse()",
        ],
        [
            "DROP TRIGGER IF EXISTS odock_test_refuse ON {table}",
            "DROP FUNCTION IF EXISTS odock_test_refuse()",
        ],
    ),
    "sqlite": (
        [
            "CREATE TRIGGER odock_test_refuse BEFORE INSERT ON {table}"
            " BEGIN SELECT RAISE(ABORT, 'change log refused (test)'); END",
        ],
        ["DROP TRIGGER IF EXISTS odock_test_refuse"],
    ),
}


@contextmanager
def _change_log_refused() -> Iterator[None]:
    """The database itself refuses every change-log insert (a trigger): a real failure
    between the key's write and its log row, not a patched function."""
    create, drop = _REFUSE[connection.vendor]
    table = ConfigChange._meta.db_table
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement.format(table=table))
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in drop:
                cursor.execute(statement.format(table=table))


def _log_rows(key: VirtualKey) -> int:
    return ConfigChange.objects.filter(scope=Scope.KEY, object_id=key.pk).count()


def _stopped(key: VirtualKey) -> bool:
    key.refresh_from_db()
    return key.revoked_at is not None or key.suspended_at is not None


@pytest.mark.parametrize("change", [key_revoke, key_suspend])
def test_a_revoked_or_suspended_key_gets_its_change_log_row(transactional_db, change):
    key = key_create().key
    before = _log_rows(key)

    change(key=key)

    assert _stopped(key)
    assert _log_rows(key) == before + 1  # what tells every gateway process to drop the key


@pytest.mark.parametrize("change", [key_revoke, key_suspend])
def test_a_key_change_rolls_back_with_its_change_log_row(transactional_db, change):
    key = key_create().key
    before = _log_rows(key)

    with _change_log_refused(), pytest.raises(DatabaseError):
        change(key=key)

    # Committed without its row, the key would be stopped here and keep working in every
    # gateway process (their snapshots only learn of it from the log).
    assert not _stopped(key)
    assert _log_rows(key) == before
