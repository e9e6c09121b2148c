"""The ``anthropic`` kind."""

from __future__ import annotations

from apps.gateway.providers.anthropic.adapter import AnthropicAdapter
from apps.gateway.providers.contract import ProviderSpec

ANTHROPIC = ProviderSpec("anthropic", "Anthropic", AnthropicAdapter)
