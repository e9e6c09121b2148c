"""What a provider supplies and what the gateway asks of it, declared once.

The shape follows Envoy AI Gateway's translator interface: the translation is pure (it
never touches a socket) and one base adapter (:mod:`apps.gateway.providers.base`) owns
the I/O around it — post, error mapping, translation, usage, send, and the one stream
loop — so every provider fails the same way.

* :class:`Adapter` is what the route stage calls;
* :class:`Translator` is the per-provider half the base adapter calls (request,
  response, stream, error);
* :class:`StreamTranslator` turns one provider's stream events into OpenAI chunks
  (feed / trailer), says when the answer is complete, how it failed, and what it cost
  (usage);
* :class:`StreamDecoder` cuts the upstream body into those events (SSE, AWS event stream).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.snapshot import DeploymentEntry

if TYPE_CHECKING:
    from yarl import URL

#: What the base adapter is asked to do; a provider's hooks receive one of these.
CHAT = "chat"
STREAM = "stream"
EMBEDDINGS = "embeddings"


class Adapter(Protocol):
    """Speaks one provider's wire format. Each method sends the OpenAI-format answer to the
    client (``respond``), fills ``ctx`` usage, and raises ``GatewayError`` on failure —
    before the first byte for anything retryable."""

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...

    async def native_call(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        """``ctx.inbound``'s own format, sent as the client wrote it (see ``native_formats``)
        and answered in that format: only for kinds that declare the format."""
        ...

    async def native_stream(self, ctx: RequestContext, dep: DeploymentEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """How a stream the provider itself ended with an error is reported: ``before`` the
    first byte (so the route stage may fail over) or ``after`` it (an SSE error event)."""

    before: GatewayError
    after: GatewayError


class StreamTranslator(Protocol):
    """One stream's provider events → OpenAI ``chat.completion.chunk`` bytes. Pure."""

    #: The provider said the answer is complete; a break after this is not an error.
    finished: bool

    def feed_event(self, event: Any) -> bytes:
        """The bytes to send for one decoded event (``b""`` for none)."""
        ...

    def trailer(self) -> bytes:
        """What ends a completed stream (``b""`` where ``feed_event`` already sent it)."""
        ...

    def failure(self) -> StreamFailure | None:
        """The provider's own error event, once one was fed."""
        ...

    def settle(self, ctx: RequestContext) -> None:
        """The stream's usage → ``ctx`` (estimated when no complete count arrived)."""
        ...


class StreamDecoder(Protocol):
    """Cuts an upstream body into events, whatever the chunk boundaries."""

    def feed(self, data: bytes) -> Iterable[Any]:
        """The complete events ``data`` finished."""
        ...

    def flush(self) -> Iterable[Any]:
        """At the end of the body: a last event sent without its terminator."""
        ...


class Translator(Protocol):
    """The per-provider hooks the base adapter calls around its I/O."""

    def endpoint(self, dep: DeploymentEntry, op: str, data: bytes) -> tuple[URL, dict[str, str]]:
        """Where ``op`` goes and with which headers (signed over ``data`` if need be)."""
        ...

    def request(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> bytes:
        """The upstream request body for ``op``."""
        ...

    def response(
        self, ctx: RequestContext, op: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        """The OpenAI answer to send for ``op``'s 200 answer; records usage on ``ctx``."""
        ...

    def error(self, status: int, body: bytes, headers: Any) -> GatewayError:
        """A non-200 answer → what the client sees."""
        ...

    def stream(self, ctx: RequestContext, headers: Mapping[str, str]) -> StreamTranslator:
        """A fresh translator for one stream."""
        ...

    def decoder(self) -> StreamDecoder:
        """A fresh decoder for one stream's body."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider kind's declaration: what the registry, the admin's choices, the options
    check and the adapter table are derived from.

    The adapter is named, not imported: the Django side (choices, options checks, the
    snapshot compiler) reads specs without loading the adapters and botocore (~0.4 s).
    """

    kind: str
    label: str
    #: The typed options (a frozen dataclass of strings) the adapter reads.
    options: type
    #: ``"module:Class"`` of a :class:`~.base.BaseAdapter` subclass whose ``options_type``
    #: is ``options``; kinds naming one class share its instance.
    adapter_path: str
    #: Inbound formats (``ctx.inbound.format``, e.g. ``"anthropic.messages"``) this kind
    #: speaks natively: the route stage calls the adapter's ``native_call`` /
    #: ``native_stream`` for them instead of the OpenAI-translated path. Per kind, not per
    #: adapter class: kinds sharing an adapter need not share its native formats.
    native_formats: frozenset[str] = frozenset()

    @property
    def adapter(self) -> type:
        """The adapter class, imported on first use."""
        module, _, name = self.adapter_path.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
