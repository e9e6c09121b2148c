"""What the platform's bearer tokens share (the management API's admin tokens, SCIM
tokens): a last-used time kept without turning every authenticated read into a write."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

# last_used_at is informational: writing it on every call would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_touch(*, token: Any) -> None:
    """Record use at most once per ``LAST_USED_RESOLUTION``, as a conditional update (no
    lost-update races between processes). ``token``: a row with ``last_used_at``."""
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    type(token)._default_manager.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=token.pk
    ).update(last_used_at=now)
    token.last_used_at = now
