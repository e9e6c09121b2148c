"""A person's changes that the policy snapshot compiles go to the change log
(``apps.configlog``), so running gateways recompile that person's keys without a full
rebuild: their username labels their own budgets, rate limits and model access
(``user:<name>``), and ``is_active`` decides whether their keys work at all.

Other changes (a login's ``last_login``, a password, an email) are not logged: a login
saves with ``update_fields`` and costs no extra query. A deleted person is logged by
``apps.policies.signals``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import models
from django.db.models.signals import post_save, pre_save

from apps.configlog.models import Scope
from apps.configlog.services import config_change_record
from apps.core.models import config_version_bump

_BEFORE = "_odock_compiled_before"


def compiled_fields(user_model: type[models.Model]) -> tuple[str, ...]:
    """The person's fields the snapshot compiles."""
    return (user_model.USERNAME_FIELD, "is_active")


def _before_user_save(
    sender: type[models.Model],
    instance: models.Model,
    update_fields: frozenset[str] | None = None,
    **_kwargs: Any,
) -> None:
    if instance._state.adding or instance.pk is None:
        return  # a new person owns no key yet
    fields = compiled_fields(sender)
    if update_fields is not None and not set(update_fields) & set(fields):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list(*fields).first()
    setattr(instance, _BEFORE, stored)


def _user_saved(sender: type[models.Model], instance: models.Model, **_kwargs: Any) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    if before is None:
        return
    if before == tuple(getattr(instance, field) for field in compiled_fields(sender)):
        return
    config_change_record(scope=Scope.USER, object_id=instance.pk, source=instance._meta.label)
    config_version_bump()


def connect_user_signals() -> None:
    user_model = get_user_model()
    # The change log's naming (``apps.policies.signals``): its bulk-write check reads it.
    uid = f"odock-config-{user_model._meta.label}"
    pre_save.connect(_before_user_save, sender=user_model, dispatch_uid=f"{uid}-pre", weak=False)
    post_save.connect(_user_saved, sender=user_model, dispatch_uid=f"{uid}-save", weak=False)
