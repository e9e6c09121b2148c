"""Admin pieces shared by the apps' admins (nothing is registered here)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import capfirst

from apps.core.fields import EncryptedTextField
from apps.core.forms import WriteOnlySecretField, WriteOnlySecretsModelForm


class WriteOnlySecretsAdminMixin:
    """For a ModelAdmin: every ``EncryptedTextField`` of the model becomes write-only.

    Its stored value never reaches a page (a default form would render the plaintext in a
    textarea) and a blank submission keeps it. Fields a custom form declares itself win.
    """

    form: type[forms.ModelForm] = WriteOnlySecretsModelForm

    def formfield_for_dbfield(
        self, db_field: models.Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if isinstance(db_field, EncryptedTextField):
            help_text = f"{db_field.help_text} {WriteOnlySecretField.default_help_text}"
            return WriteOnlySecretField(
                label=capfirst(db_field.verbose_name), help_text=help_text.strip()
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]


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
