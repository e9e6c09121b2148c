"""Virtual keys in the admin: the secret is shown once (and kept nowhere), revoke and rotate."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from tests.factories import key_create

SECRET = re.compile(r"sk-odock-[A-Za-z0-9_-]{20,}")
ADD_URL = reverse("admin:keys_virtualkey_add")
CHANGELIST_URL = reverse("admin:keys_virtualkey_changelist")


def change_url(key: VirtualKey) -> str:
    return reverse("admin:keys_virtualkey_change", args=[key.pk])


@pytest.mark.django_db
def test_add_shows_the_secret_once_and_stores_only_its_digest(admin_client, world):
    form = admin_client.get(ADD_URL).content.decode()
    for name in ("project", "name", "owner", "expires_at_0"):
        assert f'name="{name}"' in form
    assert 'name="prefix"' not in form and "digest" not in form

    response = admin_client.post(
        ADD_URL, {"project": world.project.pk, "name": "batch-jobs", "owner": ""}
    )

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "admin/keys/virtualkey/key_created.html"
    html = response.content.decode()
    [secret] = set(SECRET.findall(html))
    assert "it will not be shown again" in html
    assert "no-store" in response["Cache-Control"]
    key = VirtualKey.objects.get(project=world.project, name="batch-jobs")
    assert change_url(key) in html
    assert key.digest != secret and secret not in key.digest
    assert key_secret_matches(key=key, secret=secret)
    # Not in cookies (messages framework, session), not in the history, not on any later page.
    assert secret not in str(response.cookies)
    assert not LogEntry.objects.filter(change_message__contains=secret).exists()
    assert not LogEntry.objects.filter(object_repr__contains=secret).exists()
    for url in (
        change_url(key),
        CHANGELIST_URL,
        reverse("admin:keys_virtualkey_history", args=[key.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert secret not in page and key.digest not in page, url
    assert key.prefix in admin_client.get(change_url(key)).content.decode()


@pytest.mark.django_db
def test_add_with_a_taken_name_shows_a_form_error(admin_client, world):
    response = admin_client.post(
        ADD_URL, {"project": world.project.pk, "name": world.issued.key.name, "owner": ""}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not SECRET.search(response.content.decode())
    assert VirtualKey.objects.filter(project=world.project).count() == 1


@pytest.mark.django_db
def test_change_page_edits_name_but_never_shows_a_digest(admin_client, world):
    key = world.issued.key
    html = admin_client.get(change_url(key)).content.decode()
    assert key.prefix in html
    assert key.digest not in html and world.issued.secret not in html
    assert 'name="project"' not in html  # a key stays in its project

    response = admin_client.post(
        change_url(key),
        {
            "name": "renamed",
            "owner": "",
            "budget-TOTAL_FORMS": "0",
            "budget-INITIAL_FORMS": "0",
            "ratelimit-TOTAL_FORMS": "0",
            "ratelimit-INITIAL_FORMS": "0",
            "modelaccess-TOTAL_FORMS": "1",
            "modelaccess-INITIAL_FORMS": "1",
            "modelalias-TOTAL_FORMS": "0",
            "modelalias-INITIAL_FORMS": "0",
            "deploymenttagrule-TOTAL_FORMS": "0",
            "deploymenttagrule-INITIAL_FORMS": "0",
            "contentcapture-TOTAL_FORMS": "0",
            "contentcapture-INITIAL_FORMS": "0",
            "guardrailrule-TOTAL_FORMS": "0",
            "guardrailrule-INITIAL_FORMS": "0",
            "modelaccess-0-id": world.access.pk,
            "modelaccess-0-key": key.pk,
            "modelaccess-0-model": world.model.pk,
        },
    )

    assert response.status_code == 302, response.context and response.context["errors"]
    key.refresh_from_db()
    assert key.name == "renamed"
    assert key_secret_matches(key=key, secret=world.issued.secret)


@pytest.mark.django_db
def test_revoke_action_revokes_selected_keys(admin_client, world):
    other = key_create(world.project, "other").key
    spare = key_create(world.project, "spare").key

    response = admin_client.post(
        CHANGELIST_URL,
        {"action": "revoke_keys", "_selected_action": [world.issued.key.pk, other.pk]},
    )

    assert response.status_code == 302
    revoked = set(VirtualKey.objects.filter(revoked_at__isnull=False).values_list("pk", flat=True))
    assert revoked == {world.issued.key.pk, other.pk}
    listing = admin_client.get(CHANGELIST_URL + "?status=revoked").content.decode()
    assert change_url(other) in listing and change_url(spare) not in listing
    active = admin_client.get(CHANGELIST_URL + "?status=active").content.decode()
    assert change_url(spare) in active and change_url(other) not in active


@pytest.mark.django_db
def test_rotate_action_shows_the_new_secret_once(admin_client, world):
    key = world.issued.key
    old_digest = key.digest

    response = admin_client.post(
        CHANGELIST_URL, {"action": "rotate_key", "_selected_action": [key.pk]}
    )

    assert response.status_code == 200
    html = response.content.decode()
    [secret] = set(SECRET.findall(html))
    assert secret != world.issued.secret
    assert "it will not be shown again" in html
    assert "previous secret keeps working until" in html
    key.refresh_from_db()
    assert key_secret_matches(key=key, secret=secret)
    assert key.previous_digest == old_digest and key.previous_valid_until is not None
    assert secret not in admin_client.get(change_url(key)).content.decode()


@pytest.mark.django_db
def test_rotate_action_needs_exactly_one_live_key(admin_client, world):
    other = key_create(world.project, "other").key
    digests = dict(VirtualKey.objects.values_list("pk", "digest"))

    response = admin_client.post(
        CHANGELIST_URL,
        {"action": "rotate_key", "_selected_action": [world.issued.key.pk, other.pk]},
        follow=True,
    )
    assert "Select exactly one key to rotate." in response.content.decode()
    assert not SECRET.search(response.content.decode())

    admin_client.post(CHANGELIST_URL, {"action": "revoke_keys", "_selected_action": [other.pk]})
    response = admin_client.post(
        CHANGELIST_URL, {"action": "rotate_key", "_selected_action": [other.pk]}, follow=True
    )
    assert "A revoked key cannot be rotated." in response.content.decode()
    assert dict(VirtualKey.objects.values_list("pk", "digest")) == digests
