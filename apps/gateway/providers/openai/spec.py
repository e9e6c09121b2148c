"""The ``openai`` and ``openai_compatible`` kinds: one wire, one adapter, no options."""

from __future__ import annotations

from apps.gateway.providers.contract import ProviderSpec
from apps.gateway.providers.options import NoOptions

_ADAPTER = "apps.gateway.providers.openai.adapter:OpenAIAdapter"

OPENAI = ProviderSpec(
    "openai", "OpenAI", NoOptions, _ADAPTER, native_formats=frozenset({"openai.responses"})
)
OPENAI_COMPATIBLE = ProviderSpec(
    "openai_compatible", "OpenAI-compatible (vLLM, Ollama, Mistral, …)", NoOptions, _ADAPTER
)
