"""The ``anthropic`` kind: its declaration and typed options (no I/O imported here)."""

from __future__ import annotations

from dataclasses import dataclass

from apps.gateway.providers.contract import ProviderSpec

DEFAULT_VERSION = "2023-06-01"
#: The inbound format ``/v1/messages`` declares (``ctx.inbound.format``).
MESSAGES_FORMAT = "anthropic.messages"


@dataclass(frozen=True, slots=True)
class AnthropicOptions:
    """``anthropic_version``: the ``anthropic-version`` header sent."""

    anthropic_version: str = DEFAULT_VERSION


ANTHROPIC = ProviderSpec(
    "anthropic",
    "Anthropic",
    AnthropicOptions,
    "apps.gateway.providers.anthropic.adapter:AnthropicAdapter",
    native_formats=frozenset({MESSAGES_FORMAT}),
)
