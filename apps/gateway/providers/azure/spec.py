"""The ``azure`` kind: the OpenAI wire at Azure's URLs, with Azure's key header."""

from __future__ import annotations

from apps.gateway.providers.azure.adapter import AzureOpenAIAdapter
from apps.gateway.providers.contract import ProviderSpec

AZURE = ProviderSpec("azure", "Azure OpenAI", AzureOpenAIAdapter)
