"""Fixtures shared by the provider tests: one fake upstream per provider kind, and a
gateway whose model ``m`` is served by it — parametrised over the registry, so a new
provider is in every matrix test the moment it is registered."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import openai
import pytest

from apps.gateway.providers.registry import PROVIDERS
from apps.providers.models import Deployment, DeploymentRole, Model
from fakes.registry import BEDROCK_ACCESS_KEY_ID, FAKES
from tests.factories import key_create, model_create, provider_create

UPSTREAM_SECRET = "upstream-secret-never-shown-0f3a9"
AWS_KEY_ID = BEDROCK_ACCESS_KEY_ID
KINDS = list(PROVIDERS)
#: The first delta of a translated stream, as OpenAI's.
OPENING_DELTA = {"role": "assistant", "content": "", "refusal": None}


def start_fake(kind: str):
    """(server, upstream model name, provider options) for one kind."""
    fake = FAKES[kind]
    return fake.start(UPSTREAM_SECRET), fake.upstream_model, dict(fake.options)


@contextlib.contextmanager
def served_by(kind: str, gateway) -> Iterator[tuple]:
    """A gateway whose model ``m`` is served by one provider of ``kind`` (its fake):
    ``(kind, gateway, key secret, fake server)``."""
    server, upstream_model, options = start_fake(kind)
    try:
        provider = provider_create(server.url, name=kind, api_key=UPSTREAM_SECRET, kind=kind)
        provider.options = options
        provider.save()
        model_create(
            "m", provider, upstream_model=upstream_model, input_per_mtok="3", output_per_mtok="15"
        )
        issued = key_create()
        gateway.snapshots.reload()
        yield kind, gateway, issued.secret, server
    finally:
        server.stop()


@pytest.fixture(params=KINDS)
def routed(request, gateway) -> Iterator[tuple]:
    """A gateway whose model ``m`` is served by one provider of the parametrized kind."""
    with served_by(request.param, gateway) as served:
        yield served


def with_openai_fallback(gateway, model: Model, fake_upstream) -> tuple:
    """``model`` (served by the provider under test) with an OpenAI fallback deployment
    ``openai-backup:gpt-backup``: (gateway, an openai client with a fresh key)."""
    Deployment.objects.create(
        model=model,
        provider=provider_create(fake_upstream.url, name="openai-backup"),
        upstream_model="gpt-backup",
        role=DeploymentRole.FALLBACK,
    )
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return gateway, client
