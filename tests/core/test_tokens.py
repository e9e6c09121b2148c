"""token_touch: the bearer tokens' last-used time, written at most once a minute."""

from __future__ import annotations

import pytest
from django.utils import timezone

from apps.api.models import AdminToken
from apps.api.services import admin_token_issue
from apps.core.tokens import LAST_USED_RESOLUTION, token_touch


def _stored(token: AdminToken):
    return AdminToken.objects.get(pk=token.pk).last_used_at


@pytest.mark.django_db
def test_the_first_use_is_recorded_then_at_most_once_per_resolution():
    token = admin_token_issue(name="ci", organization=None).token
    token_touch(token=token)
    first = _stored(token)
    assert first is not None and token.last_used_at == first

    token_touch(token=AdminToken.objects.get(pk=token.pk))  # a minute has not passed
    assert _stored(token) == first

    long_ago = timezone.now() - LAST_USED_RESOLUTION * 2
    AdminToken.objects.filter(pk=token.pk).update(last_used_at=long_ago)
    token_touch(token=AdminToken.objects.get(pk=token.pk))
    assert _stored(token) > first


@pytest.mark.django_db
def test_a_stale_copy_does_not_write_over_a_newer_use():
    """Two processes holding the same row: the conditional update keeps the newer time."""
    token = admin_token_issue(name="ci", organization=None).token
    stale_copy = AdminToken.objects.get(pk=token.pk)  # last_used_at None in memory
    token_touch(token=token)
    recorded = _stored(token)

    token_touch(token=stale_copy)

    assert _stored(token) == recorded
