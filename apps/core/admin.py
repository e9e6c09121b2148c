"""Admin pieces shared by the apps' admins (nothing is registered here)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst

from apps.core.fields import EncryptedTextField
from apps.core.forms import WriteOnlySecretField, WriteOnlySecretsModelForm
from apps.core.money import usd_display
from apps.core.secrets import encrypted_fields, secret_status
from apps.core.services import Saved, model_save

# --- numbers for people (list and detail pages) ---------------------------------------


def ms_text(value: float | None) -> str:
    """A duration in milliseconds as people read it: ``8.6`` below 10 ms, then whole
    milliseconds with thousands separators (``1,234``); ``—`` when not measured."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def number_text(value: Decimal | int | None) -> str:
    """A limit as typed: ``100``, ``0.5``, never ``100.000000``; ``—`` when unset."""
    if value is None:
        return "—"
    text = f"{Decimal(value).normalize():f}"
    return text


def usd_text(value: Decimal | str | None) -> str:
    """Money for people, the one rule of ``apps.core.money.usd_display`` (``$100.00``,
    ``$0.00000495``); a dash for no value."""
    if value is None:
        return "—"
    return usd_display(value)


def ellipsis(text: str, title: str | None = None) -> SafeString:
    """A long identifier cut to fit a list column; the whole value in its tooltip."""
    return format_html('<span class="odock-ellipsis" title="{}">{}</span>', title or text, text)


def status_name(name: str) -> str:
    """The read-only admin field shown in place of secret ``name``."""
    return f"{name}_status"


def _status_display(field: EncryptedTextField) -> Callable[[models.Model], str]:
    """What a page shows in place of ``field``: set or not, and when it last changed."""

    def status(obj: models.Model) -> str:
        return secret_status(obj, field.name)

    status.short_description = capfirst(field.verbose_name)  # type: ignore[attr-defined]
    return status


class WriteOnlySecretsAdminMixin:
    """For a ModelAdmin or inline: every ``EncryptedTextField`` of the model is write-only.

    No page ever renders a stored secret, whatever the viewer's permissions:

    - who may change the object gets an always-empty password input (blank keeps the stored
      value) whose help text says whether one is set and when it last changed;
    - who may only view it gets that sentence instead of the field: Django renders a
      view-only page's fields read-only, which would print the decrypted value.

    ``apps.core.checks`` refuses a secret-holding model's admin without this mixin, or one
    naming a secret in its list, search, filter or read-only options.
    """

    form: type[forms.ModelForm] = WriteOnlySecretsModelForm

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.secret_fields = {f.name: f for f in encrypted_fields(self.model)}  # type: ignore[attr-defined]
        for name, field in self.secret_fields.items():
            setattr(self, status_name(name), _status_display(field))

    def formfield_for_dbfield(
        self, db_field: models.Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if isinstance(db_field, EncryptedTextField):
            help_text = f"{db_field.help_text} {WriteOnlySecretField.default_help_text}"
            return WriteOnlySecretField(
                label=capfirst(db_field.verbose_name), help_text=help_text.strip()
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]

    def get_form(self, request: HttpRequest, obj: models.Model | None = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)  # type: ignore[misc]
        for name in self.secret_fields:
            field = form.base_fields.get(name)
            if field is not None and obj is not None:
                # A copy: a form's declared fields are shared by every request.
                field = form.base_fields[name] = copy.deepcopy(field)
                field.help_text = f"{secret_status(obj, name)}. {field.help_text}"
        return form

    def get_fieldsets(self, request: HttpRequest, obj: models.Model | None = None) -> Any:
        """Who may not change the object sees each secret's status in its place."""
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        if self._may_write(request, obj):
            return fieldsets
        return [
            (title, {**options, "fields": [self._shown(line) for line in options["fields"]]})
            for title, options in fieldsets
        ]

    def _may_write(self, request: HttpRequest, obj: models.Model | None) -> bool:
        # An add page is only served to who may add (an inline without that permission
        # shows no form on it); a change page is read-only to who may not change.
        return obj is None or self.has_change_permission(request, obj)  # type: ignore[attr-defined]

    def _shown(self, line: Any) -> Any:
        if isinstance(line, list | tuple):
            return type(line)(self._shown(name) for name in line)
        return status_name(line) if line in self.secret_fields else line


class CredentialStatusFilter(admin.SimpleListFilter):
    """Active / expired / revoked, for anything with ``expires_at`` and ``revoked_at``
    (virtual keys, admin tokens)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        not_revoked = Q(revoked_at__isnull=True)
        if self.value() == "active":
            return queryset.filter(not_revoked, Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "expired":
            return queryset.filter(not_revoked, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


def form_values(obj: models.Model, form: forms.BaseForm) -> dict[str, Any]:
    """The model fields a bound admin form set on ``obj``, as a service's ``data``."""
    names = {f.name for f in obj._meta.concrete_fields if not f.primary_key}
    return {name: getattr(obj, name) for name in form.cleaned_data if name in names}


def instance_adopt(obj: models.Model, saved: models.Model) -> None:
    """Make the admin's ``obj`` the row the service saved (the admin goes on with it:
    history entry, redirect, inlines' parent)."""
    if saved is obj:
        return
    for field in obj._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


class ServiceSaveAdminMixin:
    """For a ModelAdmin: the change form and its inlines write through services, the same
    ones ``odock_apply`` and the management API call, so validation and the change trail
    do not depend on the door.

    ``save_service`` gets the stored row (None on an add page) and the form's values; by
    default it is ``model_update`` (via ``model_save``), an app's admin overrides it with
    its upsert service. Inline rows go through ``model_save`` too.
    """

    def save_service(
        self, *, stored: models.Model | None, obj: models.Model, data: dict[str, Any]
    ) -> Saved[Any]:
        return model_save(instance=stored or obj, data=data)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        early = getattr(request, "_odock_early_save", None)
        if early is not None and early[1] is obj and obj.pk is not None:
            return  # an add page saved it already, before its rule inlines (LevelRulesMixin)
        stored = type(obj)._default_manager.get(pk=obj.pk) if change else None
        saved = self.save_service(stored=stored, obj=obj, data=form_values(obj, form))
        instance_adopt(obj, saved.instance)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        rows = formset.save(commit=False)
        for row in formset.deleted_objects:
            row.delete()
        by_row = {id(f.instance): f for f in formset.forms}
        for row in rows:
            if row._state.adding:
                model_save(instance=row, data={})
                continue
            stored = type(row)._default_manager.get(pk=row.pk)
            saved = model_save(instance=stored, data=form_values(row, by_row[id(row)]))
            instance_adopt(row, saved.instance)
        formset.save_m2m()
