"""Keys are stored as a keyed digest plus a short visible prefix, never in clear."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.keys.models import VirtualKey
from apps.keys.secrets import KEY_PREFIX
from apps.keys.services import key_rotate, key_secret_matches
from tests.factories import key_create


@pytest.mark.django_db
def test_key_is_stored_only_as_digest_and_prefix():
    issued = key_create()
    assert issued.secret.startswith(KEY_PREFIX) and len(issued.secret) > 40
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_virtualkey WHERE id = %s", [issued.key.pk])
        row = cursor.fetchone()
    stored = " ".join(str(v) for v in row)
    assert issued.secret not in stored
    assert issued.secret[len(KEY_PREFIX) + 6 :] not in stored  # not even the secret part
    key = VirtualKey.objects.get(pk=issued.key.pk)
    assert key.prefix == issued.secret[: len(KEY_PREFIX) + 6]
    assert key_secret_matches(key=key, secret=issued.secret)
    assert not key_secret_matches(key=key, secret=issued.secret + "x")


@pytest.mark.django_db
def test_two_keys_never_share_a_secret():
    assert key_create().secret != key_create().secret


@pytest.mark.django_db
def test_rotation_keeps_old_digest_for_grace():
    issued = key_create()
    old_digest = issued.key.digest
    rotated = key_rotate(key=issued.key)
    key = VirtualKey.objects.get(pk=issued.key.pk)
    assert rotated.secret != issued.secret
    assert key.previous_digest == old_digest and key.digest != old_digest
    assert key.previous_valid_until is not None


@pytest.mark.django_db
def test_a_revoked_key_cannot_be_rotated():
    from apps.keys.services import key_revoke

    issued = key_create()
    key_revoke(key=issued.key)
    with pytest.raises(ValueError, match="revoked"):
        key_rotate(key=issued.key)
