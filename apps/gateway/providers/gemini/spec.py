"""The ``gemini`` kind: its declaration and typed options (no I/O imported here)."""

from __future__ import annotations

from dataclasses import dataclass

from apps.gateway.providers.contract import ProviderSpec

DEFAULT_API_VERSION = "v1beta"


@dataclass(frozen=True, slots=True)
class GeminiOptions:
    """``api_version``: the path's version segment (``v1beta``, ``v1``)."""

    api_version: str = DEFAULT_API_VERSION


GEMINI = ProviderSpec(
    "gemini",
    "Google Gemini",
    GeminiOptions,
    "apps.gateway.providers.gemini.adapter:GeminiAdapter",
)
