"""Fixtures of the contract tests: the provider matrix of tests/gateway/providers (a
gateway whose model ``m`` is served by the fake of each provider kind), shared rather than
rebuilt, and a gateway set up to refuse in every way the contract lists."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.guardrails.models import GuardrailRule
from apps.policies.models import Budget, RateLimit
from tests.factories import allow_models, key_create, model_create, provider_create
from tests.gateway.providers.conftest import routed  # noqa: F401 - a fixture

#: Bodies above this many bytes get 413 from the refusals' gateway.
MAX_BODY_BYTES = 4_000


@pytest.fixture
def refusals(gateway_factory, fake_upstream) -> dict:
    """A gateway in front of the OpenAI fake with models ``alpha`` and ``beta`` and one
    key per refusal: ``ok`` (may do anything), ``narrow`` (its organisation allows only
    ``beta``), ``limited`` (1 request a minute), ``broke`` (a budget smaller than any
    request's worst case), ``guarded`` (its organisation blocks secrets in prompts and
    answers and redacts e-mail addresses in answers)."""
    gateway = gateway_factory(max_body_bytes=MAX_BODY_BYTES)
    provider = provider_create(fake_upstream.url)
    model_create("alpha", provider)
    beta = model_create("beta", provider)
    keys = {name: key_create() for name in ("ok", "narrow", "limited", "broke", "guarded")}
    allow_models(keys["narrow"].key.project.team.organization, beta)
    RateLimit.objects.create(key=keys["limited"].key, rpm=1)
    Budget.objects.create(key=keys["broke"].key, limit_usd=Decimal("0.000001"), period="total")
    guarded = keys["guarded"].key.project.team.organization
    for detector, action, stage in (
        ("secrets", "block", "input"),
        ("secrets", "block", "output"),
        ("email", "redact", "output"),
    ):
        GuardrailRule.objects.create(
            organization=guarded, detector=detector, action=action, stage=stage
        )
    gateway.snapshots.reload()
    secrets = {name: issued.secret for name, issued in keys.items()}
    return {"gateway": gateway, "upstream": fake_upstream, "keys": keys, **secrets}


def one_attempt(gateway) -> None:
    """Model ``m`` gets one attempt: the error tests check the shape of what a failure
    looks like, and the retries after a 429's ``retry-after: 1`` cost 2 s a test."""
    from apps.providers.models import Model

    Model.objects.filter(name="m").update(max_attempts=1)
    gateway.snapshots.reload()
