"""Which adapter speaks to which provider kind.

One entry per ``ProviderKind``; a kind without an adapter answers 503
``provider_not_supported`` (and the route stage fails over to the next deployment).
"""

from __future__ import annotations

from apps.gateway.providers.anthropic.translate import AnthropicAdapter
from apps.gateway.providers.azure.adapter import AzureOpenAIAdapter
from apps.gateway.providers.bedrock.adapter import BedrockAdapter
from apps.gateway.providers.gemini.adapter import GeminiAdapter
from apps.gateway.providers.pool import Adapter, OpenAIAdapter, UpstreamPool


def build_adapters(pool: UpstreamPool) -> dict[str, Adapter]:
    """Provider kind -> adapter, all sharing one connection pool per upstream."""
    openai_wire = OpenAIAdapter(pool)
    adapters: dict[str, Adapter] = {
        "openai": openai_wire,
        "openai_compatible": openai_wire,
        "anthropic": AnthropicAdapter(pool),
        "bedrock": BedrockAdapter(pool),
        "azure": AzureOpenAIAdapter(pool),
        "gemini": GeminiAdapter(pool),
    }
    return adapters
