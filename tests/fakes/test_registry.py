"""The registry of fakes: one per provider kind, each starting the fake of its wire format."""

from __future__ import annotations

import importlib
import subprocess
import sys

import httpx
import pytest

from apps.gateway.providers.registry import PROVIDERS
from fakes.base import FakeServer
from fakes.registry import FAKES

KINDS = list(PROVIDERS)  # the gateway's provider registry


def test_every_provider_kind_has_a_fake():
    assert sorted(FAKES) == sorted(KINDS)


def test_the_registry_is_read_only():
    with pytest.raises(TypeError):
        FAKES["new"] = FAKES["openai"]  # type: ignore[index]


@pytest.mark.parametrize("kind", KINDS)
def test_each_fake_starts_requires_its_secret_and_names_a_runnable_module(kind):
    fake = FAKES[kind]
    server = fake.start("registry-secret")
    try:
        assert isinstance(server, FakeServer)
        assert server.url.startswith("http://127.0.0.1:") and server.port
        # Unauthenticated, every fake refuses (401, 403 or 400, in its provider's words).
        answer = httpx.post(server.url + "/v1/chat/completions", json={}, timeout=5)
        assert answer.status_code in (400, 401, 403, 404)
        assert server.requests  # recorded even when refused
    finally:
        server.stop()
    module = importlib.import_module(fake.module)
    assert isinstance(server, module.CLI.server_class)
    assert fake.upstream_model


def test_importing_the_registry_imports_no_fake():
    code = (
        "import sys, fakes.registry; "
        "print(sorted(m for m in sys.modules if m.startswith('fakes.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['fakes.registry']"


def test_no_fake_imports_django():
    code = (
        "import sys, fakes.openai_server, fakes.azure_server, fakes.anthropic_server, "
        "fakes.gemini_server, fakes.bedrock_server, fakes.registry; "
        "print([m for m in sys.modules if m == 'django' or m.startswith('django.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
