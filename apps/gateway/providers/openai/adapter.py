"""The OpenAI wire-format adapter (OpenAI and compatible servers: vLLM, Ollama, Mistral…).

``/v1/responses`` requests go natively to the ``openai`` kind (and Azure's, which
subclasses this adapter): ``POST {api_base}/responses`` (:mod:`.responses_native`). The
``openai_compatible`` kind does not declare the format (not every compatible server has
the Responses API), so it is served the translation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.providers.base import BaseAdapter, cached_target
from apps.gateway.providers.contract import EMBEDDINGS, StreamTranslator
from apps.gateway.providers.openai.responses_native import (
    ResponsesPassThrough,
    native_answer,
    native_body,
)
from apps.gateway.providers.openai.translate import (
    OpenAIStreamTranslator,
    openai_request,
    public_model_field,
    raw_event,
    read_usage,
    with_public_model,
)
from apps.gateway.providers.sse import SSEDecoder
from apps.gateway.snapshot import DeploymentEntry

PATHS = {EMBEDDINGS: "/embeddings"}  # chat and stream: /chat/completions


def _auth_headers(dep: DeploymentEntry) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if dep.api_key:
        headers["Authorization"] = f"Bearer {dep.api_key}"
    return headers


class OpenAIAdapter(BaseAdapter):
    """Speaks OpenAI's chat-completions and embeddings wire format: forwards, reads usage,
    passes the answer through with only its ``model`` renamed to the public name."""

    stop_when_finished = False  # read to the end of the body: the connection is reused

    def _target(self, dep: DeploymentEntry, path: str) -> tuple[URL, dict[str, str]]:
        """The parsed URL and headers of an upstream endpoint."""
        return cached_target(
            self._targets,
            (dep.api_base, path, dep.api_key),
            lambda: (URL(dep.api_base + path), _auth_headers(dep)),
        )

    def endpoint(self, dep: DeploymentEntry, op: str, data: bytes) -> tuple[URL, dict[str, str]]:
        return self._target(dep, PATHS.get(op, "/chat/completions"))

    def request(self, ctx: RequestContext, dep: DeploymentEntry, op: str) -> bytes:
        assert ctx.body is not None
        return openai_request(ctx.body, dep.upstream_model, op)

    def response(
        self, ctx: RequestContext, op: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        read_usage(ctx, orjson.loads(body).get("usage"))
        field = public_model_field(ctx.model_name)
        return with_public_model(body, field, last=op == EMBEDDINGS)

    def stream(self, ctx: RequestContext, headers: Mapping[str, Any]) -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator(include_usage=ctx.include_usage, public_model=ctx.model_name)

    def decoder(self) -> SSEDecoder:
        return SSEDecoder(raw_event, crlf=False)

    # ---- native: OpenAI Responses in and out (the kinds declaring "openai.responses")

    def native_target(self, dep: DeploymentEntry) -> tuple[URL, dict[str, str]]:
        """The URL and headers of the deployment's Responses endpoint."""
        return self._target(dep, "/responses")

    def native_request(
        self, ctx: RequestContext, dep: DeploymentEntry, op: str
    ) -> tuple[URL, dict[str, str], bytes]:
        assert ctx.inbound is not None
        url, headers = self.native_target(dep)
        return url, headers, native_body(ctx.inbound.body, dep.upstream_model)

    def native_answer(self, ctx: RequestContext, body: bytes, headers: Mapping[str, str]) -> bytes:
        return native_answer(ctx, body)

    def native_events(self, ctx: RequestContext, headers: Mapping[str, Any]) -> StreamTranslator:
        return ResponsesPassThrough(ctx.inbound.adopt if ctx.inbound is not None else None)

    def native_decoder(self) -> SSEDecoder:
        return SSEDecoder(raw_event, crlf=False)
