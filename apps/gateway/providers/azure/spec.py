"""The ``azure`` kind: its declaration and typed options (no I/O imported here)."""

from __future__ import annotations

from dataclasses import dataclass

from apps.gateway.providers.contract import ProviderSpec

#: The ``api-version`` used when the provider sets none: the GA data-plane version.
DEFAULT_API_VERSION = "2024-10-21"
#: ``api_version`` value selecting the v1 surface (``/openai/v1/...``, no api-version).
V1 = "v1"


@dataclass(frozen=True, slots=True)
class AzureOptions:
    """``api_version``: a dated data-plane version, or ``v1`` for the v1 surface."""

    api_version: str = DEFAULT_API_VERSION


AZURE = ProviderSpec(
    "azure",
    "Azure OpenAI",
    AzureOptions,
    "apps.gateway.providers.azure.adapter:AzureOpenAIAdapter",
    # /v1/responses natively, always on Azure's v1 surface (see the adapter's docstring).
    native_formats=frozenset({"openai.responses"}),
)
