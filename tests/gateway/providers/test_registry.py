"""The registry is the one list of provider kinds: the model's choices, the adapter table,
the options check, the typed options in the snapshot and the test matrix agree with it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from apps.gateway.providers.anthropic.spec import AnthropicOptions
from apps.gateway.providers.azure.spec import AzureOptions
from apps.gateway.providers.base import BaseAdapter
from apps.gateway.providers.bedrock.spec import BedrockOptions
from apps.gateway.providers.options import NoOptions
from apps.gateway.providers.pool import UpstreamPool
from apps.gateway.providers.registry import (
    PROVIDERS,
    build_adapters,
    choices,
    options_errors,
    options_parse,
)
from apps.gateway.snapshot import DeploymentEntry
from apps.policies.compile import snapshot_compile
from apps.providers.models import Provider, ProviderKind
from tests.factories import model_create, provider_create
from tests.gateway.providers.conftest import KINDS

# The kinds and labels as they were before the registry: the stored values must not move.
KINDS_BEFORE = [
    ("openai", "OpenAI"),
    ("openai_compatible", "OpenAI-compatible (vLLM, Ollama, Mistral, …)"),
    ("azure", "Azure OpenAI"),
    ("anthropic", "Anthropic"),
    ("gemini", "Google Gemini"),
    ("bedrock", "AWS Bedrock"),
]


def test_the_model_choices_are_the_registry():
    assert choices() == KINDS_BEFORE
    assert ProviderKind.choices == choices()
    assert list(Provider._meta.get_field("kind").choices) == choices()
    assert ProviderKind.AZURE == "azure" and ProviderKind("bedrock").label == "AWS Bedrock"


def test_the_adapter_table_and_the_test_matrix_are_the_registry():
    adapters = build_adapters(UpstreamPool(timeout_seconds=1))
    assert list(adapters) == list(PROVIDERS) == KINDS
    for kind, spec in PROVIDERS.items():
        assert spec.kind == kind and spec.label
        assert type(adapters[kind]) is spec.adapter and issubclass(spec.adapter, BaseAdapter)
        assert spec.adapter.options_type is spec.options
        assert dataclasses.is_dataclass(spec.options)
        assert spec.options.__dataclass_params__.frozen
        assert all(f.type in (str, "str") for f in dataclasses.fields(spec.options))
    # one wire, one instance (and one cache of built targets)
    assert adapters["openai"] is adapters["openai_compatible"]
    assert adapters["azure"] is not adapters["openai"]


@pytest.mark.parametrize(
    ("kind", "options", "expected"),
    [
        ("openai", {}, []),
        ("openai", None, []),
        ("azure", {"api_version": "v1"}, []),
        ("bedrock", {"region": "eu-west-1", "access_key_id": "AKID", "auth": "bearer"}, []),
        ("anthropic", {"anthropic_version": "2023-06-01"}, []),
        ("gemini", {"api_version": "v1"}, []),
        (
            "azure",
            {"api_verison": "v1"},
            ["unknown option 'api_verison' (known: api_version)"],
        ),
        ("openai", {"region": "x"}, ["unknown option 'region' (known: none)"]),
        ("gemini", {"api_version": 1}, ["option 'api_version' must be a string, not int"]),
        ("bedrock", ["region"], ["options must be an object"]),
        (
            "cohere",
            {},
            [
                "unknown provider kind 'cohere' (known: openai, openai_compatible, azure, "
                "anthropic, gemini, bedrock)"
            ],
        ),
    ],
)
def test_options_errors_names_every_problem(kind, options, expected):
    assert options_errors(kind, options) == expected


def test_options_errors_lists_all_problems_at_once():
    problems = options_errors("bedrock", {"region": 3, "zone": "a", "auth": "bearer"})
    assert problems == [
        "option 'region' must be a string, not int",
        "unknown option 'zone' (known: auth, region, access_key_id)",
    ]


def test_options_parse_is_lenient_as_the_snapshot_always_was():
    assert options_parse("azure", {"api_version": "v1", "stale": "x"}) == AzureOptions("v1")
    assert options_parse("azure", {}) == AzureOptions()
    assert options_parse("anthropic", {"anthropic_version": 20230601}) == AnthropicOptions(
        "20230601"
    )
    assert options_parse("openai", {"anything": "x"}) == NoOptions()
    assert options_parse("cohere", {}) is None


@pytest.mark.django_db
def test_the_snapshot_carries_typed_options():
    provider = provider_create("https://bedrock-runtime.eu-west-1.amazonaws.com", kind="bedrock")
    provider.options = {"region": "eu-west-1", "access_key_id": "AKID", "unknown": 1}
    provider.save()
    model_create("m", provider, upstream_model="amazon.titan-embed-text-v2:0")

    [entry] = snapshot_compile().models["m"].primaries

    assert entry.typed_options == BedrockOptions(region="eu-west-1", access_key_id="AKID")
    assert entry.options == (("access_key_id", "AKID"), ("region", "eu-west-1"), ("unknown", "1"))


def test_adapters_read_the_typed_options_not_the_json():
    dep = DeploymentEntry(
        id=1,
        provider="az",
        kind="azure",
        api_base="https://res.openai.azure.com",
        api_key="k",
        upstream_model="gpt-prod",
        options=(("api_version", "2024-10-21"),),  # what the JSON said; the typed value wins
        typed_options=AzureOptions(api_version="v1"),
    )
    adapter = build_adapters(UpstreamPool(timeout_seconds=1))["azure"]
    url, headers = adapter.endpoint(dep, "chat", b"{}")
    assert str(url) == "https://res.openai.azure.com/openai/v1/chat/completions"
    assert headers["api-key"] == "k"


def test_reading_the_registry_loads_no_adapter():
    """The Django side (model choices, options checks, snapshot compile) reads specs only:
    aiohttp and botocore (~0.4 s) stay out of manage.py and Celery."""
    probe = (
        "import sys, apps.gateway.providers.registry; "
        "print([m for m in ('aiohttp', 'botocore') if m in sys.modules])"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_doors_reading_keeps_unknown_keys_but_not_misread_values():
    """What the admin and odock_apply use: free-form keys stay, a kind's own option must
    be text."""
    assert (
        options_errors("azure", {"api_version": "v1", "temperature": 0.5}, allow_unknown=True) == []
    )
    assert options_errors("azure", {"api_version": 2024}, allow_unknown=True) == [
        "option 'api_version' must be a string, not int"
    ]
    assert options_errors("cohere", {}, allow_unknown=True) != []
