"""The ``openai`` and ``openai_compatible`` kinds: one wire, one adapter."""

from __future__ import annotations

from apps.gateway.providers.contract import ProviderSpec
from apps.gateway.providers.openai.adapter import OpenAIAdapter

OPENAI = ProviderSpec("openai", "OpenAI", OpenAIAdapter)
OPENAI_COMPATIBLE = ProviderSpec(
    "openai_compatible", "OpenAI-compatible (vLLM, Ollama, Mistral, …)", OpenAIAdapter
)
