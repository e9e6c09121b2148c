"""Fixtures and helpers for the change trail and evidence pack tests (and the tests of
other packages that read the trail)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db.models import Model as DjangoModel
from django.urls import reverse

from apps.compliance.models import ConfigChange


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


def admin_url(model: type[DjangoModel], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def post_form(client, url: str, values: dict[str, Any]) -> Any:
    page = client.get(url)
    assert page.status_code == 200, url
    response = client.post(url, {**admin_form_data(page), **values})
    if response.status_code == 200 and response.context and "adminform" in response.context:
        errors = response.context["adminform"].form.errors
        assert not errors, f"{url}: {errors}"
    return response


def trail_of(obj_type: type[DjangoModel], pk: Any, action: str) -> list[ConfigChange]:
    return list(
        ConfigChange.objects.filter(
            object_type=obj_type._meta.label_lower, object_id=str(pk), action=action
        )
    )


def trail_text() -> str:
    return json.dumps(list(ConfigChange.objects.values()), default=str)
