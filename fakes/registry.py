"""Which fake serves each provider kind, and what the gateway needs to reach it.

``FAKES`` has one entry per provider kind the gateway supports (``openai``,
``openai_compatible``, ``azure``, ``anthropic``, ``gemini``, ``bedrock``): how to start the
fake that speaks that provider's wire format, the upstream model name to deploy and the
provider ``options`` the gateway must be given for it. Test matrices over every kind read it
instead of an if-chain; a test checks it names the same kinds as the gateway's own provider
registry, so a new provider cannot be added without its fake.

Importing this module imports no fake (nor the SDKs they validate with) until one is started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakes.base import FakeServer

__all__ = ["BEDROCK_ACCESS_KEY_ID", "BEDROCK_REGION", "FAKES", "Fake"]

#: The AWS key id and region the Bedrock fake checks SigV4 signatures for (the secret is
#: the upstream key given to ``Fake.start``).
BEDROCK_ACCESS_KEY_ID = "AKIDMATRIXTEST"
BEDROCK_REGION = "eu-west-1"


@dataclasses.dataclass(frozen=True)
class Fake:
    """How to stand in for one provider kind."""

    #: The ``python -m`` module that runs this fake standalone.
    module: str
    #: Builds the (not yet started) fake; its argument is the upstream secret to require.
    build: Callable[[str], FakeServer]
    #: The deployment's upstream model name.
    upstream_model: str
    #: The provider ``options`` the gateway needs to reach this fake.
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def start(self, secret: str) -> FakeServer:
        """Start the fake in a background thread, requiring ``secret``; returns it."""
        return self.build(secret).start()


def _openai(secret: str) -> FakeServer:
    from fakes.openai_server import FakeOpenAIServer

    return FakeOpenAIServer(api_key=secret)


def _azure(secret: str) -> FakeServer:
    from fakes.azure_server import FakeAzureOpenAIServer

    return FakeAzureOpenAIServer(api_key=secret)


def _anthropic(secret: str) -> FakeServer:
    from fakes.anthropic_server import FakeAnthropicServer

    return FakeAnthropicServer(api_key=secret)


def _gemini(secret: str) -> FakeServer:
    from fakes.gemini_server import FakeGeminiServer

    return FakeGeminiServer(api_key=secret)


def _bedrock(secret: str) -> FakeServer:
    from fakes.bedrock_server import FakeBedrockServer

    return FakeBedrockServer(
        access_key_id=BEDROCK_ACCESS_KEY_ID, secret_access_key=secret, region=BEDROCK_REGION
    )


#: Provider kind -> its fake. Read-only.
FAKES: Mapping[str, Fake] = MappingProxyType(
    {
        "openai": Fake("fakes.openai_server", _openai, "gpt-up"),
        "openai_compatible": Fake("fakes.openai_server", _openai, "gpt-up"),
        "azure": Fake("fakes.azure_server", _azure, "gpt-deploy"),
        "anthropic": Fake("fakes.anthropic_server", _anthropic, "claude-up"),
        "gemini": Fake("fakes.gemini_server", _gemini, "gemini-up"),
        "bedrock": Fake(
            "fakes.bedrock_server",
            _bedrock,
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            MappingProxyType({"region": BEDROCK_REGION, "access_key_id": BEDROCK_ACCESS_KEY_ID}),
        ),
    }
)
