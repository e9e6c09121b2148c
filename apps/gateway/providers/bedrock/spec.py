"""The ``bedrock`` kind."""

from __future__ import annotations

from apps.gateway.providers.bedrock.adapter import BedrockAdapter
from apps.gateway.providers.contract import ProviderSpec

BEDROCK = ProviderSpec("bedrock", "AWS Bedrock", BedrockAdapter)
