"""Provider credentials are encrypted at rest and decrypt for the gateway."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.gateway.snapshot import DeploymentEntry
from apps.policies.compile import snapshot_compile
from apps.providers.models import Provider
from tests.factories import model_create, provider_create


@pytest.mark.django_db
def test_api_key_is_encrypted_at_rest():
    provider = provider_create("http://127.0.0.1:9/v1", api_key="sk-live-very-secret-value")
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM providers_provider WHERE id = %s", [provider.pk])
        (stored,) = cursor.fetchone()
    assert stored and "sk-live-very-secret-value" not in stored
    assert Provider.objects.get(pk=provider.pk).api_key == "sk-live-very-secret-value"


@pytest.mark.django_db
def test_snapshot_holds_decrypted_key_but_never_prints_it():
    provider = provider_create("http://127.0.0.1:9/v1", api_key="sk-live-very-secret-value")
    model_create("m", provider)
    deployment: DeploymentEntry = snapshot_compile().models["m"].primaries[0]
    assert deployment.api_key == "sk-live-very-secret-value"
    assert "sk-live-very-secret-value" not in repr(deployment)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.openai.com/v1", True),
        ("http://vllm:8000/v1", True),  # in-cluster service name
        ("http://127.0.0.1:9001/v1", True),
        ("ftp://example.com", False),
        ("http://", False),
        ("http://host:notaport/v1", False),
        ("not a url", False),
    ],
)
def test_api_base_accepts_single_label_hosts_and_refuses_junk(url, ok):
    from django.core.exceptions import ValidationError

    from apps.core.validators import validate_upstream_url

    if ok:
        validate_upstream_url(url)
    else:
        with pytest.raises(ValidationError):
            validate_upstream_url(url)
