"""Stored secrets (``EncryptedTextField``) are write-only: after a secret is entered, the
only things any page, API answer or export may say about it are whether it is set and
when it last changed.

Every encrypted field ``<name>`` has a companion ``<name>_changed_at`` (a non-editable,
nullable DateTimeField) kept by ``SecretChangeTimes``; ``secret_status`` is the one
sentence shown instead of the value. ``apps.core.checks`` refuses a model or an admin that
breaks these rules.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django.db import models, router
from django.utils import timezone

from apps.core.fields import EncryptedTextField

CHANGED_AT_SUFFIX = "_changed_at"


def encrypted_fields(model: type[models.Model]) -> list[EncryptedTextField]:
    return [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]


def changed_at_name(name: str) -> str:
    """The companion field recording when secret ``name`` last changed."""
    return f"{name}{CHANGED_AT_SUFFIX}"


def changed_at_names(model: type[models.Model]) -> frozenset[str]:
    return frozenset(changed_at_name(f.name) for f in encrypted_fields(model))


def secret_changed_at_field() -> models.DateTimeField:
    """The companion of a secret field: set by ``SecretChangeTimes``, never by a form."""
    return models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the secret was last set or cleared."
    )


def secret_status(obj: models.Model | None, name: str) -> str:
    """ "Set, last changed …" or "Not set": what is shown in place of a secret."""
    if obj is None or obj.pk is None:
        return "Not set"
    changed = getattr(obj, changed_at_name(name), None)
    when = f"{changed.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if changed else None
    if getattr(obj, name):
        return f"Set, last changed {when}" if when else "Set (when is not recorded)"
    return f"Not set (cleared {when})" if when else "Not set"


class SecretChangeTimes:
    """For a model with encrypted fields (listed before ``models.Model``): a save that sets,
    replaces or clears a secret stamps its ``<name>_changed_at``; any other save does not.

    Compares with the stored row (one small query per save of such a model: admin and
    ``odock_apply`` writes, never the hot path). Honours ``update_fields``.
    """

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        changed = self._secrets_changed(kwargs.get("using"), update_fields)
        if changed:
            now = timezone.now()
            for name in changed:
                setattr(self, changed_at_name(name), now)
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, *map(changed_at_name, changed)}
        super().save(*args, **kwargs)  # type: ignore[misc]

    def _secrets_changed(self, using: str | None, update_fields: Any) -> list[str]:
        model = type(self)
        fields = [
            f
            for f in encrypted_fields(model)  # type: ignore[arg-type]
            if f.attname in self.__dict__  # a deferred field is not being written
            and (update_fields is None or f.name in update_fields or f.attname in update_fields)
        ]
        if not fields:
            return []
        stored = None
        if not self._state.adding and self.pk is not None:  # type: ignore[attr-defined]
            db = using or router.db_for_write(model, instance=self)
            stored = (
                model._base_manager.using(db)  # type: ignore[attr-defined]
                .filter(pk=self.pk)  # type: ignore[attr-defined]
                .values_list(*[f.attname for f in fields])
                .first()
            )
        if stored is None:
            return [f.name for f in fields if getattr(self, f.attname)]
        return [
            f.name
            for f, old in zip(fields, stored, strict=True)
            if (old or "") != (getattr(self, f.attname) or "")
        ]
