"""Provider services: options validation, upserts and the deployment / fallback syncs."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from apps.providers import services
from apps.providers.models import Deployment, Model, Provider
from apps.providers.services import (
    deployments_sync,
    model_fallbacks_sync,
    model_upsert,
    provider_options_validate,
    provider_upsert,
)
from tests.factories import provider_create

PROVIDER = {"kind": "openai", "api_base": "http://127.0.0.1:9001/v1"}


def test_options_must_be_a_json_object():
    provider_options_validate(kind="azure", options={"api_version": "2024-10-21"})
    with pytest.raises(ValidationError) as caught:
        provider_options_validate(kind="azure", options=["api_version"])
    assert caught.value.message_dict == {"options": ["Provider options must be a JSON object."]}


def test_options_errors_of_the_kind_are_raised_on_the_options_field(monkeypatch):
    monkeypatch.setattr(
        services, "options_errors", lambda kind, options, **_: [f"{kind}: region is required"]
    )
    with pytest.raises(ValidationError) as caught:
        provider_options_validate(kind="bedrock", options={})
    assert caught.value.message_dict == {"options": ["bedrock: region is required"]}


@pytest.mark.django_db
def test_provider_upsert_creates_then_updates_only_what_differs():
    created = provider_upsert(name="openai-main", data={**PROVIDER, "api_key": "sk-a"})
    same = provider_upsert(name="openai-main", data={**PROVIDER, "api_key": "sk-a"})
    changed = provider_upsert(name="openai-main", data={**PROVIDER, "options": {"x": "1"}})

    assert created.created and not same.wrote
    assert changed.changed == ("options",)
    assert Provider.objects.get(name="openai-main").options == {"x": "1"}


@pytest.mark.django_db
def test_provider_upsert_refuses_bad_options_and_bad_fields():
    with pytest.raises(ValidationError) as caught:
        provider_upsert(name="p", data={**PROVIDER, "options": "region=eu"})
    assert "options" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        provider_upsert(name="p", data={**PROVIDER, "api_base": "not a url"})
    assert "api_base" in caught.value.message_dict
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_model_upsert_sets_prices():
    saved = model_upsert(name="gpt", data={"input_per_mtok": Decimal("0.15")})
    assert saved.created
    assert Model.objects.get(name="gpt").input_per_mtok == Decimal("0.15")
    assert not model_upsert(name="gpt", data={"input_per_mtok": Decimal("0.150")}).wrote


@pytest.mark.django_db
def test_deployments_sync_replaces_the_models_deployments():
    one = provider_create("http://127.0.0.1:9001/v1", name="one")
    two = provider_create("http://127.0.0.1:9002/v1", name="two")
    model = Model.objects.create(name="gpt")
    Deployment.objects.create(model=model, provider=one, upstream_model="old")
    Deployment.objects.create(model=model, provider=one, upstream_model="gpt", weight=1)

    result = deployments_sync(
        model=model,
        deployments=[
            {"provider": one, "upstream_model": "gpt", "weight": 3},
            {"provider": two, "upstream_model": "gpt", "weight": 1},
        ],
    )

    assert len(result.created) == 1 and len(result.deleted) == 1
    assert result.updated == [f"deployment {Deployment.objects.get(provider=one)} (weight)"]
    rows = {(d.provider.name, d.upstream_model, d.weight) for d in model.deployments.all()}
    assert rows == {("one", "gpt", 3), ("two", "gpt", 1)}


@pytest.mark.django_db
def test_model_fallbacks_sync_keeps_the_given_order():
    model, a, b = (Model.objects.create(name=n) for n in ("m", "a", "b"))

    result = model_fallbacks_sync(model=model, fallbacks=[b, a])

    assert result.created == ["fallback m → b", "fallback m → a"]
    assert [f.fallback.name for f in model.fallbacks.order_by("position")] == ["b", "a"]
    assert not model_fallbacks_sync(model=model, fallbacks=[b, a]).created


@pytest.mark.django_db
def test_provider_upsert_refuses_a_kinds_own_option_that_is_not_text():
    with pytest.raises(ValidationError) as caught:
        provider_upsert(
            name="b", data={**PROVIDER, "kind": "bedrock", "options": {"region": ["eu"]}}
        )
    assert "region" in str(caught.value.message_dict["options"])
    assert not Provider.objects.exists()
