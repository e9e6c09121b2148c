"""The ``gemini`` kind."""

from __future__ import annotations

from apps.gateway.providers.contract import ProviderSpec
from apps.gateway.providers.gemini.adapter import GeminiAdapter

GEMINI = ProviderSpec("gemini", "Google Gemini", GeminiAdapter)
