"""The ``bedrock`` kind: its declaration and typed options (no I/O imported here)."""

from __future__ import annotations

from dataclasses import dataclass

from apps.gateway.providers.contract import ProviderSpec


@dataclass(frozen=True, slots=True)
class BedrockOptions:
    """``auth``: ``bearer`` for a Bedrock API key, else SigV4; ``region`` (else read from
    the host); ``access_key_id`` when ``api_key`` is the bare secret access key."""

    auth: str = ""
    region: str = ""
    access_key_id: str = ""


BEDROCK = ProviderSpec(
    "bedrock",
    "AWS Bedrock",
    BedrockOptions,
    "apps.gateway.providers.bedrock.adapter:BedrockAdapter",
)
