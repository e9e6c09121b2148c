"""Configuration version: the counter gateway processes watch to rebuild their snapshot."""

from __future__ import annotations

from django.db import models, transaction
from django.db.models import F


class ConfigVersion(models.Model):
    """Single row whose ``version`` grows on every governance change.

    Each gateway process polls it (one tiny query per second, off the hot path) and
    rebuilds its in-memory policy snapshot when it moves. Living in the database, it works
    the same for the admin, the API and ``odock_apply`` run from another process.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"config v{self.version}"


def config_version_bump() -> None:
    """Bump the version once the current transaction commits."""

    def _bump() -> None:
        updated = ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1)
        if not updated:
            ConfigVersion.objects.get_or_create(pk=1, defaults={"version": 1})

    transaction.on_commit(_bump)


def config_version_current() -> int:
    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0
