"""The key page's Rotate and Revoke buttons over HTTP: a confirmation page that changes
nothing, a POST that needs its CSRF token, and only for who may change the key."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from apps.identity.models import Role
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from tests.dashboard.conftest import make_user
from tests.factories import team_create

SECRET = re.compile(r"sk-odock-[A-Za-z0-9_-]{20,}")


def urls(key: VirtualKey) -> tuple[str, str, str]:
    return (
        reverse("admin:keys_virtualkey_change", args=[key.pk]),
        reverse("admin:keys_virtualkey_rotate", args=[key.pk]),
        reverse("admin:keys_virtualkey_revoke", args=[key.pk]),
    )


@pytest.mark.django_db
def test_buttons_confirm_then_act(admin_client, world):
    key = world.issued.key
    change, rotate, revoke = urls(key)
    page = admin_client.get(change).content.decode()
    assert f'href="{rotate}"' in page and f'href="{revoke}"' in page
    assert "Spend and budgets by level" in page

    confirm = admin_client.get(revoke)
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert admin_client.get(rotate).status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is None and key_secret_matches(key=key, secret=world.issued.secret)

    rotated = admin_client.post(rotate)
    assert "no-store" in rotated["Cache-Control"]
    [secret] = set(SECRET.findall(rotated.content.decode()))
    key.refresh_from_db()
    assert key_secret_matches(key=key, secret=secret)
    assert secret not in admin_client.get(change).content.decode()

    done = admin_client.post(revoke)
    assert done.status_code == 302 and done["Location"] == change
    key.refresh_from_db()
    assert key.revoked_at is not None
    page = admin_client.get(change).content.decode()
    assert f'href="{revoke}"' not in page  # nothing left to revoke or rotate
    assert admin_client.post(rotate).status_code == 302  # refused: a revoked key
    assert set(SECRET.findall(page)) == set()


@pytest.mark.django_db
def test_a_post_without_its_csrf_token_is_refused(world):
    user = make_user("ops", staff=True, superuser=True, role=Role.PLATFORM_ADMIN)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    _change, _rotate, revoke = urls(world.issued.key)
    assert client.post(revoke).status_code == 403
    world.issued.key.refresh_from_db()
    assert world.issued.key.revoked_at is None


@pytest.mark.django_db
def test_another_teams_admin_can_neither_see_nor_use_them(client, world):
    other = team_create(world.org, "ads")
    client.force_login(make_user("ads-admin", staff=False, role=Role.TEAM_ADMIN, team=other))
    _change, rotate, revoke = urls(world.issued.key)
    for url in (rotate, revoke):
        assert client.get(url).status_code == 403
        assert client.post(url).status_code == 403
    world.issued.key.refresh_from_db()
    assert world.issued.key.revoked_at is None
    assert key_secret_matches(key=world.issued.key, secret=world.issued.secret)


@pytest.mark.django_db
def test_a_read_only_role_sees_no_buttons(client, world):
    auditor = make_user("auditor", staff=False, role=Role.AUDITOR, organization=world.org)
    client.force_login(auditor)
    change, rotate, revoke = urls(world.issued.key)
    page = client.get(change)
    if page.status_code == 200:
        assert f'href="{revoke}"' not in page.content.decode()
    assert client.post(revoke).status_code == 403
    world.issued.key.refresh_from_db()
    assert world.issued.key.revoked_at is None
