"""Admin pieces shared by the apps' admins (nothing is registered here)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models
from django.http import HttpRequest
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
