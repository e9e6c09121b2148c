"""key_update (odock_apply's and the admin's change path) and key_secret_validate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.keys.services import key_secret_matches, key_secret_validate, key_update
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
