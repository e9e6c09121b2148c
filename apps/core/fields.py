"""Model fields shared by several apps."""

from __future__ import annotations

from typing import Any

from django.db import models

from apps.core import crypto


class EncryptedTextField(models.TextField):
    """Stores a secret encrypted at rest; Python code sees the plaintext.

    The admin never renders it back (see ``apps.core.forms.WriteOnlySecretField``).
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return crypto.decrypt(value)

    def formfield(self, **kwargs: Any) -> Any:
        """Write-only by default: no form ever renders the stored secret."""
        from apps.core.forms import WriteOnlySecretField

        return super().formfield(**{"form_class": WriteOnlySecretField, **kwargs})

    def get_prep_value(self, value: Any) -> str | None:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return crypto.encrypt(value)
