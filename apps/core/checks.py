"""System checks that keep stored secrets write-only (``apps.core.secrets``).

``manage.py check`` (and so every test run and server start) fails when a model's
encrypted field has no ``<name>_changed_at`` companion kept by ``SecretChangeTimes``, when
an admin (or inline) of such a model lacks ``WriteOnlySecretsAdminMixin``, or when an admin
names a secret where Django would render, filter, sort or search by its value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.contrib.admin.sites import all_sites
from django.core.checks import Error, register
from django.db import models

from apps.core.secrets import SecretChangeTimes, changed_at_name, encrypted_fields

# ModelAdmin options where a field's value is shown, filtered on, sorted by or searched.
REVEALING_OPTIONS = (
    "list_display",
    "list_display_links",
    "list_editable",
    "list_filter",
    "search_fields",
    "readonly_fields",
    "ordering",
    "sortable_by",
    "date_hierarchy",
)


def _field_names(value: Any) -> Iterable[str]:
    """Field names an option refers to: ``"-api_key"``, ``"=api_key"``, ``"api_key__x"``,
    ``("api_key", SomeFilter)``; callables and filter classes name none."""
    items = [value] if isinstance(value, str) else (value or ())
    for item in items:
        if isinstance(item, list | tuple) and item and isinstance(item[0], str):
            item = item[0]
        if isinstance(item, str):
            yield item.lstrip("-=^@").split("__")[0]


def model_errors(model: type[models.Model]) -> list[Error]:
    errors = []
    for field in encrypted_fields(model):
        companion = changed_at_name(field.name)
        try:
            stamp = model._meta.get_field(companion)
        except Exception:  # noqa: BLE001 - FieldDoesNotExist
            stamp = None
        if not isinstance(stamp, models.DateTimeField) or stamp.editable:
            errors.append(
                Error(
                    f"{model._meta.label}.{field.name} is a secret without a non-editable "
                    f"DateTimeField {companion!r} (use secret_changed_at_field()).",
                    obj=model,
                    id="odock.E001",
                )
            )
    if encrypted_fields(model) and not issubclass(model, SecretChangeTimes):
        errors.append(
            Error(
                f"{model._meta.label} holds secrets but does not subclass SecretChangeTimes.",
                obj=model,
                id="odock.E002",
            )
        )
    return errors


def admin_errors(admin_class: type, model: type[models.Model]) -> list[Error]:
    from apps.core.admin import WriteOnlySecretsAdminMixin

    secrets = {f.name for f in encrypted_fields(model)}
    if not secrets:
        return []
    errors = []
    if not issubclass(admin_class, WriteOnlySecretsAdminMixin):
        errors.append(
            Error(
                f"{admin_class.__qualname__} shows {model._meta.label}, which holds secrets, "
                "without WriteOnlySecretsAdminMixin.",
                obj=admin_class,
                id="odock.E003",
            )
        )
    for option in REVEALING_OPTIONS:
        named = secrets.intersection(_field_names(getattr(admin_class, option, None)))
        if named:
            errors.append(
                Error(
                    f"{admin_class.__qualname__}.{option} names the secret "
                    f"{', '.join(sorted(named))}; a page would show or leak its value.",
                    obj=admin_class,
                    id="odock.E004",
                )
            )
    return errors


@register()
def secrets_write_only(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    for model in apps.get_models():
        errors += model_errors(model)
    for site in all_sites:
        for model, model_admin in site._registry.items():
            errors += admin_errors(type(model_admin), model)
            for inline in model_admin.inlines:
                errors += admin_errors(inline, inline.model)
    return errors
