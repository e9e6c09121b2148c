"""Form pieces shared by several admins.

Write-only secrets: a stored credential (a provider's API key) can be replaced from a form
but is never rendered back, in any page, in any form (plaintext or ciphertext).
"""

from __future__ import annotations

from typing import Any

from django import forms


class WriteOnlySecretWidget(forms.PasswordInput):
    """An always-empty password input: the stored value never reaches the HTML."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(
            attrs={"autocomplete": "new-password", **(attrs or {})}, render_value=False
        )

    def format_value(self, value: Any) -> None:
        return None


class WriteOnlySecretField(forms.CharField):
    """A secret that can be set or replaced; blank means "keep the current one".

    Use it on a ``WriteOnlySecretsModelForm``, which does the keeping.
    """

    widget = WriteOnlySecretWidget
    default_help_text = "Write-only; leave blank to keep the current value."

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", self.default_help_text)
        super().__init__(**kwargs)

    def has_changed(self, initial: Any, data: Any) -> bool:
        # Blank keeps the stored value, so only a typed value is a change (and the
        # admin's history then says "Changed API key" only when it did).
        return bool(data)


class WriteOnlySecretsModelForm(forms.ModelForm):
    """Keeps the stored value of every blank ``WriteOnlySecretField`` on an existing object."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk is None:
            return cleaned
        for name, field in self.fields.items():
            if isinstance(field, WriteOnlySecretField) and not cleaned.get(name):
                cleaned[name] = getattr(self.instance, name)
        return cleaned
