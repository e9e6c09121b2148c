"""Fixtures for the change trail and evidence pack tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Evidence files go to a fresh directory per test, never into var/media."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def admin_form_data(response: Any) -> dict[str, Any]:
    """The POST an admin add/change page would send unchanged: every field of the main
    form and of every inline formset (management forms included), as rendered."""
    context = response.context
    forms = [context["adminform"].form]
    for inline in context["inline_admin_formsets"]:
        formset = inline.formset
        forms.append(formset.management_form)
        forms.extend(formset.forms)
    data: dict[str, Any] = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()  # already as the widget renders it
            if value is None or value is False:
                continue
            key = form.add_prefix(name)
            if value is True:
                data[key] = "on"
            elif isinstance(value, list | tuple):
                data[key] = [str(v) for v in value]
            else:
                data[key] = str(value)
    return data
