"""A fake Azure OpenAI upstream, for tests and benchmarks of the gateway.

The sibling of :mod:`fakes.openai_server`: Azure OpenAI speaks OpenAI's chat-completions
and embeddings format at other URLs, with another key header, a few extra fields and its
own error shape. This server answers like the OpenAI fake (same ``FakeBehavior`` knobs,
tool calls, request validation against the openai SDK's types, recording, counters) and
adds what is Azure's.

Point the official SDK's Azure client at ``server.url`` (``http://host:port``: the client
appends ``/openai/deployments/{model}/...`` itself)::

    with FakeAzureOpenAIServer(api_key="az-key") as server:
        client = openai.AzureOpenAI(
            azure_endpoint=server.url, api_key="az-key", api_version="2024-10-21"
        )

What it answers, like Azure:
  * Deployment-style paths: ``POST /openai/deployments/{deployment}/chat/completions`` and
    ``/embeddings``; ``GET /openai/models``. The ``api-version`` query parameter is
    required (400 otherwise); ``model`` in the body is optional (the deployment is in the
    URL) and answers name the deployment when it is absent.
  * The v1 surface: ``POST /openai/v1/chat/completions`` and ``/openai/v1/embeddings``
    (``GET /openai/v1/models``): no ``api-version`` needed, ``model`` (the deployment)
    required in the body, as on OpenAI.
  * When ``api_key`` is set, ``api-key: <key>`` is required (401 otherwise); the v1
    surface also takes ``Authorization: Bearer <key>``, as Azure does there.
  * ``deployments``: the deployment names served (default: any); another name gets 404
    ``DeploymentNotFound``.
  * Non-streaming answers carry ``prompt_filter_results`` and, per choice,
    ``content_filter_results``; streams start with Azure's extra chunk (empty ``choices``,
    ``prompt_filter_results``), sent in the same write as the role chunk, and every choice
    carries ``content_filter_results``.
  * ``content_filter_word``: a chat request whose messages contain that word (any case)
    is refused with Azure's prompt-filter 400 (``error.code == "content_filter"``,
    ``param: "prompt"``, an ``innererror`` with the category results).
  * ``completion_filter_word``: the completion is cut by the output filter: half the
    tokens, ``finish_reason: "content_filter"``, ``content_filter_results`` flagged.
  * Errors of Azure's own making (auth, api-version, unknown path or deployment, the
    ``fail_status`` knob) have Azure's shape ``{"error": {"code", "message"}}`` (429 adds
    ``retry-after: 1``); request validation errors keep OpenAI's shape, which Azure
    relays from the model service.

Order of effects: authentication, path, ``api-version``, deployment, JSON and schema
validation, the content filter, ``latency_ms``, ``hang``, ``fail_status``/``fail_times``,
then the answer. Like its siblings it imports nothing from Django.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from fakes import base
from fakes.base import FakeBehavior, json_response, retry_after, sse
from fakes.openai_server import _SSE_DONE, FakeOpenAIServer, _error

__all__ = [
    "CLI",
    "DEFAULT_PORT",
    "FakeAzureOpenAIServer",
    "FakeBehavior",
    "add_cli_arguments",
    "main",
]

#: The CLI's default port (the OpenAI fake uses 9001, the Anthropic one 9002).
DEFAULT_PORT = 9003

_DEPLOYMENTS_PREFIX = "/openai/deployments/"
_V1_KINDS = {
    "/openai/v1/chat/completions": "chat",
    "/openai/v1/embeddings": "embeddings",
    "/openai/v1/responses": "responses",  # the fake OpenAI's (fakes.openai_responses)
}
_DEPLOYMENT_KINDS = {"chat/completions": "chat", "embeddings": "embeddings"}
_MODELS_PATHS = ("/openai/models", "/openai/v1/models")

_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
_SAFE = {name: {"filtered": False, "severity": "safe"} for name in _CATEGORIES}
_FLAGGED = {**_SAFE, "violence": {"filtered": True, "severity": "medium"}}
_PROMPT_FILTER_RESULTS = [
    {
        "prompt_index": 0,
        "content_filter_results": {**_SAFE, "jailbreak": {"filtered": False, "detected": False}},
    }
]
# Azure's first stream event: no choices, no id, only the prompt's filter results.
_PROMPT_FILTER_CHUNK = sse(
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": _PROMPT_FILTER_RESULTS,
    }
)

_ERROR_CODES = {
    400: "BadRequest",
    401: "401",
    403: "403",
    404: "404",
    408: "Timeout",
    429: "429",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_ERROR_MESSAGES = {
    401: (
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource."
    ),
    429: (
        "Requests to the ChatCompletions_Create Operation have exceeded the token rate limit "
        "of your current pricing tier (fake). Please retry after 1 second."
    ),
}
_CONTENT_FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content "
    "management policy. Please modify your prompt and retry."
)


def _azure_error(status: int, message: str | None = None, code: str | None = None) -> web.Response:
    """An error in Azure's own shape: ``{"error": {"code", "message"}}``."""
    error = {
        "code": code or _ERROR_CODES.get(status, str(status)),
        "message": message or _ERROR_MESSAGES.get(status, f"The fake failed with {status}."),
    }
    return json_response({"error": error}, status, retry_after(status, "retry-after"))


def _content_filter_refusal() -> web.Response:
    """Azure's 400 for a prompt that trips the content filter (OpenAI shape + innererror)."""
    error = {
        "message": _CONTENT_FILTER_MESSAGE,
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                **_FLAGGED,
                "jailbreak": {"filtered": False, "detected": False},
            },
        },
    }
    return json_response({"error": error}, 400)


def _texts(messages: Any) -> Iterable[str]:
    if not isinstance(messages, list):
        return
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]


def _mentions(body: Mapping[str, Any], word: str | None) -> bool:
    if not word:
        return False
    needle = word.lower()
    return any(needle in text.lower() for text in _texts(body.get("messages")))


class FakeAzureOpenAIServer(FakeOpenAIServer):
    """An Azure OpenAI data-plane server with scriptable behaviour.

    Same constructor, lifecycle, counters and ``requests`` recording (with ``query``) as
    :class:`~fakes.openai_server.FakeOpenAIServer`, plus ``deployments`` (names
    served; ``None``: any), ``content_filter_word`` and ``completion_filter_word``; all
    three may be changed while the server runs.
    """

    label = "Azure OpenAI"
    default_port = DEFAULT_PORT
    api_key_help = "require 'api-key: KEY'"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Its own options, beyond the shared ones."""
        parser.add_argument(
            "--deployment",
            action="append",
            default=None,
            help="a deployment name to serve (repeatable; default: any name)",
        )
        parser.add_argument(
            "--content-filter-word", default=None, help="refuse prompts containing this word (400)"
        )
        parser.add_argument(
            "--completion-filter-word",
            default=None,
            help="cut completions of prompts containing this word (finish_reason content_filter)",
        )

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Its own constructor arguments, from the parsed options."""
        return {
            "deployments": args.deployment,
            "content_filter_word": args.content_filter_word,
            "completion_filter_word": args.completion_filter_word,
        }

    def __init__(
        self,
        *args: Any,
        deployments: Iterable[str] | None = None,
        content_filter_word: str | None = None,
        completion_filter_word: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``FakeServer``'s arguments, and the three above."""
        super().__init__(*args, **kwargs)
        self.deployments = frozenset(deployments) if deployments is not None else None
        self.content_filter_word = content_filter_word
        self.completion_filter_word = completion_filter_word

    @property
    def url(self) -> str:
        """``http://host:port``: the Azure client's ``azure_endpoint``."""
        return f"http://{self.host}:{self.port}"

    # ---- request handling

    def _authorized(self, request: web.BaseRequest, v1: bool) -> bool:
        if self._key_ok(request.headers.get("api-key")):
            return True
        return v1 and request.headers.get("Authorization") == self._expected_auth

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        path = request.path
        body, bad_json = await self._read_json(request)

        deployment: str | None = None
        if path.startswith(_DEPLOYMENTS_PREFIX):
            deployment, _, operation = path[len(_DEPLOYMENTS_PREFIX) :].partition("/")
            kind = _DEPLOYMENT_KINDS.get(operation)
            v1 = False
        else:
            kind = _V1_KINDS.get(path)
            v1 = path.startswith("/openai/v1/")
        if not self._authorized(request, v1):
            return _azure_error(401)
        if kind is None:
            if path in _MODELS_PATHS and method == "GET":
                if not v1 and not request.query.get("api-version"):
                    return self._missing_api_version()
                return await self._models("/v1/models")
            return _azure_error(404, "Resource not found")
        if method != "POST":
            return _azure_error(405, f"Method {method} not allowed for {path}.", "BadRequest")
        if not v1 and not request.query.get("api-version"):
            return self._missing_api_version()
        if v1 and isinstance(body, dict) and isinstance(body.get("model"), str):
            deployment = body["model"]
        if deployment is not None and not self._serves(deployment):
            return _azure_error(
                404,
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
                "DeploymentNotFound",
            )
        if bad_json or not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if not v1 and "model" not in body:
            body = {**body, "model": deployment}  # the URL names it; answers show it

        return await self._answer(request, kind, body)

    def _refusal(self, body: dict[str, Any], behavior: FakeBehavior) -> web.Response | None:
        """Azure's prompt filter (it has no context-window knob)."""
        return _content_filter_refusal() if _mentions(body, self.content_filter_word) else None

    def _serves(self, deployment: str) -> bool:
        return self.deployments is None or deployment in self.deployments

    @staticmethod
    def _missing_api_version() -> web.Response:
        return _azure_error(
            400,
            "Missing required query parameter 'api-version'. Add ?api-version=2024-10-21 "
            "(or another supported version) to the request URL.",
            "MissingApiVersionParameter",
        )

    def _failure(self, status: int) -> web.Response:
        """The ``fail_status`` answer in Azure's shape."""
        return _azure_error(status)

    # ---- payloads

    def _chat_payload(self, body: dict[str, Any], behavior: FakeBehavior) -> dict[str, Any]:
        if "input" in body and "messages" not in body:  # /v1/responses: the OpenAI fake's
            return super()._stream_events(body, behavior)
        filtered = _mentions(body, self.completion_filter_word)
        if filtered:  # the output filter cut the completion half-way
            behavior = dataclasses.replace(
                behavior, completion_tokens=behavior.completion_tokens // 2
            )
        payload = super()._chat_payload(body, behavior)
        payload["prompt_filter_results"] = _PROMPT_FILTER_RESULTS
        for choice in payload["choices"]:
            choice["content_filter_results"] = _FLAGGED if filtered else _SAFE
            if filtered:
                choice["finish_reason"] = "content_filter"
        return payload

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """The OpenAI fake's events with Azure's additions.

        The leading ``prompt_filter_results`` chunk shares the first write with the role
        chunk, so ``disconnect_after_chunks`` counts content chunks as in the base class.
        """
        if "input" in body and "messages" not in body:  # /v1/responses: the OpenAI fake's
            return super()._stream_events(body, behavior)
        filtered = _mentions(body, self.completion_filter_word)
        if filtered:
            behavior = dataclasses.replace(
                behavior, completion_tokens=behavior.completion_tokens // 2
            )
        events, content_chunks = super()._stream_events(body, behavior)
        out = []
        for event in events:
            if event == _SSE_DONE:
                out.append(event)
                continue
            chunk = orjson.loads(event[len(b"data: ") :])
            for choice in chunk["choices"]:
                has_text = bool(choice["delta"].get("content"))
                choice["content_filter_results"] = _SAFE if has_text else {}
                if filtered and choice["finish_reason"] == "stop":
                    choice["finish_reason"] = "content_filter"
                    choice["content_filter_results"] = _FLAGGED
            out.append(sse(chunk))
        head = [_PROMPT_FILTER_CHUNK + out[0]] if out else []
        return head + out[1:], content_chunks


# --------------------------------------------------------------------------- CLI

CLI = base.Cli(FakeAzureOpenAIServer, "fakes.azure_server", "A fake Azure OpenAI upstream.")
add_cli_arguments = CLI.add_arguments
main = CLI.main

if __name__ == "__main__":
    sys.exit(main())
