"""The AWS Bedrock Converse adapter: OpenAI chat-completions in, OpenAI answers out.

A deployment of kind ``bedrock`` is reached with ``POST {api_base}/model/{modelId}/converse``
(``converse-stream`` for streams, whose answer is the binary AWS event-stream format) and,
for embeddings, ``POST {api_base}/model/{modelId}/invoke`` on Amazon Titan text embedding
models. ``api_base`` is e.g. ``https://bedrock-runtime.eu-west-1.amazonaws.com``. The model
id is percent-encoded in the path (``...-v1:0`` → ``...-v1%3A0``, an ARN's ``/`` → ``%2F``)
exactly as botocore does, and that exact path and body are what is signed and sent.

Credentials (one rule, decided by the Provider's fields):
  * ``options.auth = "bearer"``: ``api_key`` is a Bedrock API key, sent as
    ``Authorization: Bearer``; nothing is signed.
  * otherwise requests are signed with SigV4 (botocore's ``SigV4Auth``, service
    ``bedrock``). ``api_key`` (encrypted at rest) holds the secret: either a JSON object
    ``{"access_key_id", "secret_access_key", "session_token"?}`` (the only way to give a
    session token: it is a secret too), or the bare secret access key with the key id in
    ``options.access_key_id``. The region is ``options.region``, else read from the host
    (``bedrock-runtime[-fips].REGION.amazonaws.com``).
The signer is built once per deployment; each request only signs (~0.1 ms of CPU).

What is translated (OpenAI → Converse):
  * ``system`` / ``developer`` messages → ``system: [{"text"}]``; user/assistant turns →
    ``messages`` with ``{"text"}`` blocks; consecutive same-role messages are merged
    (Converse requires alternating roles);
  * image parts given as base64 ``data:`` URLs → ``{"image": {"format", "source":
    {"bytes"}}}`` (png, jpeg, gif, webp); a remote image URL or another format is a 400:
    Bedrock cannot fetch URLs and dropping the image would answer a different question;
  * ``tools`` → ``toolConfig.tools[].toolSpec`` (``inputSchema.json`` = parameters);
    ``tool_choice`` auto/required/named → ``{"auto"}``/``{"any"}``/``{"tool"}``;
    ``tool_choice: "none"`` has no Converse equivalent: the tools are not sent, unless the
    conversation already holds tool calls, where Bedrock insists on a ``toolConfig``: then
    they are sent with the model's default choice;
  * assistant ``tool_calls`` → ``toolUse`` blocks; ``role: "tool"`` → a user message with a
    ``toolResult`` block whose content is the tool's text (kept as ``text``, not parsed
    into ``json``: every Converse model takes text, not all take ``json``; no ``status``,
    which only some models accept);
  * ``max_completion_tokens`` / ``max_tokens``, ``temperature``, ``top_p``, ``stop`` →
    ``inferenceConfig`` {maxTokens, temperature, topP, stopSequences};
  * ``response_format``: ``json_object`` / ``text`` add nothing; ``json_schema`` is
    refused with 400 ``unsupported_parameter`` rather than silently ignored.
Not forwarded: ``parallel_tool_calls``, ``user``, ``seed``, penalties, ``logprobs``,
``logit_bias``, ``stream_options`` (the usage chunk is ours); ``n`` > 1 is refused (400).
A conversation that does not start with a user turn, or that holds tool calls but no
``tools``, is sent as is: Bedrock's own ValidationException explains it to the client.

Answers (Converse → OpenAI): text blocks joined, ``toolUse`` → ``tool_calls`` (arguments =
the JSON of ``input``), ``reasoningContent`` dropped; stop reasons end_turn/stop_sequence →
stop, max_tokens/model_context_window_exceeded → length, tool_use → tool_calls,
guardrail_intervened/content_filtered → content_filter. Usage: ``prompt_tokens`` counts
``inputTokens`` + cache reads + cache writes (all are input the model read),
``prompt_tokens_details.cached_tokens`` the cache reads alone.

Streams: messageStart → the role chunk; ``contentBlockStart`` of a toolUse → a tool_calls
delta (index, id, name); ``contentBlockDelta`` text / toolUse.input pieces → content /
arguments deltas; messageStop → the finish_reason chunk; metadata → the usage chunk (only
when ``stream_options.include_usage``) and ``[DONE]``. An ``exception`` message before the
first byte is mapped like an HTTP error (so throttling / unavailable / model stream errors
are retryable and fail over); after it, and for a stream that ends without messageStop
and metadata, the client gets an explicit SSE error event.

Embeddings: only Amazon Titan text embeddings (``amazon.titan-embed*``), one InvokeModel
call per input string, run concurrently, token counts summed; ``dimensions`` is
forwarded, ``encoding_format: "base64"`` is honoured; other models answer 400
``embeddings_not_supported``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError, bad_request, upstream_error
from apps.gateway.respond import end_stream, send_body, send_chunk, sse_error_event, start_stream
from apps.gateway.snapshot import DeploymentEntry
from apps.gateway.upstream import (
    UpstreamPool,
    _connect_error,
    _error_from_upstream,
    _timeout_error,
)

SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
EMBEDDING_PREFIX = "amazon.titan-embed"
EMBEDDING_CONCURRENCY = 16  # InvokeModel calls in flight for one embeddings request

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}

_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com")
# How Bedrock (and the models behind it) say the prompt does not fit the context window.
_TOO_LONG = re.compile(
    r"(?:input|prompt)\b.{0,40}?\b(?:too long|exceeds?)"
    r"|too many (?:input )?tokens|context (?:length|window)",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- requests


def _text_of(content: Any) -> str:
    """The text of an OpenAI content value (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        )
    return ""


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise bad_request(
            "Bedrock takes images only as base64 data URLs (data:image/png;base64,...).",
            code="unsupported_parameter",
            param=param,
        )
    media_type, data = url[5:].split(";base64,", 1)
    image_format = IMAGE_FORMATS.get(media_type.lower())
    if image_format is None:
        raise bad_request(
            f"Bedrock does not accept images of type '{media_type[:50]}' "
            "(png, jpeg, gif and webp only).",
            code="invalid_value",
            param=param,
        )
    # In the REST JSON body a blob is its base64 text: the data URL's payload as is.
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _content_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    """OpenAI user/assistant content → Converse blocks (empty text dropped: it is rejected)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for position, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and part.get("text"):
                blocks.append({"text": str(part["text"])})
            elif part.get("type") == "image_url":
                blocks.append(_image_block(part, f"messages[{index}].content[{position}]"))
    return blocks


def _tool_use_blocks(tool_calls: Any, index: int) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls or ():
        if not isinstance(call, dict):
            continue  # malformed: nothing to translate
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError as exc:
            raise bad_request(
                "Tool call arguments must be a JSON object.",
                code="invalid_value",
                param=f"messages[{index}].tool_calls",
            ) from exc
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": str(call.get("id") or ""),
                    "name": str(function.get("name") or ""),
                    "input": parsed if isinstance(parsed, dict) else {"value": parsed},
                }
            }
        )
    return blocks


def _tool_result_block(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        texts = [
            {"text": str(p["text"])}
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        ]
    else:
        texts = [{"text": content}] if isinstance(content, str) and content else []
    return {"toolResult": {"toolUseId": str(message.get("tool_call_id") or ""), "content": texts}}


def _tool_spec(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    spec: dict[str, Any] = {
        "name": str(function.get("name") or ""),
        "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
    }
    if function.get("description"):
        spec["description"] = str(function["description"])
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"tool": {"name": str(name or "")}}
    if choice == "required":
        return {"any": {}}
    if choice == "auto":
        return {"auto": {}}
    return None  # not given (the model's default is auto), or "none" (handled by the caller)


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        config["maxTokens"] = max_tokens
    for source, target in (("temperature", "temperature"), ("top_p", "topP")):
        value = body.get(source)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            config[target] = value
    stop = body.get("stop")
    if isinstance(stop, str) and stop:
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = [str(s) for s in stop]
    return config


def _check_unsupported(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        raise bad_request(
            "response_format 'json_schema' is not supported for Bedrock deployments "
            "(Converse has no structured-output mode we translate to); use 'json_object' "
            "or a tool.",
            code="unsupported_parameter",
            param="response_format",
        )
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise bad_request(
            "Bedrock returns one choice per request: 'n' must be 1.",
            code="unsupported_parameter",
            param="n",
        )


def openai_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions body → a Converse body (the model id goes in the URL)."""
    _check_unsupported(body)
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    has_tool_blocks = False
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result_block(message)]
            has_tool_blocks = True
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), index)
            calls = _tool_use_blocks(message.get("tool_calls"), index)
            has_tool_blocks = has_tool_blocks or bool(calls)
            blocks += calls
        else:
            role, blocks = "user", _content_blocks(message.get("content"), index)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config = _inference_config(body)
    if config:
        out["inferenceConfig"] = config
    tools = [
        _tool_spec(t)
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type", "function") == "function"
    ]
    choice = body.get("tool_choice")
    if tools and (choice != "none" or has_tool_blocks):
        tool_config: dict[str, Any] = {"tools": tools}
        converse_choice = _tool_choice(choice)
        if converse_choice is not None:
            tool_config["toolChoice"] = converse_choice
        out["toolConfig"] = tool_config
    return out


# --------------------------------------------------------------------------- responses


def openai_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Converse ``TokenUsage`` → OpenAI usage; cache reads and writes are input tokens too."""
    usage = usage or {}
    cache_read = int(usage.get("cacheReadInputTokens") or 0)
    cache_write = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cache_read + cache_write
    completion = int(usage.get("outputTokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def _tool_call(tool_use: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": tool_use.get("toolUseId"),
        "type": "function",
        "function": {
            "name": tool_use.get("name"),
            "arguments": orjson.dumps(tool_use.get("input") or {}).decode(),
        },
    }


def converse_to_openai(answer: dict[str, Any], public_model: str, answer_id: str) -> dict[str, Any]:
    """A Converse answer → an OpenAI ``chat.completion`` named after the public model."""
    message = (answer.get("output") or {}).get("message") or {}
    blocks = [b for b in message.get("content") or () if isinstance(b, dict)]
    text = "".join(str(b["text"]) for b in blocks if isinstance(b.get("text"), str))
    calls = [_tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)]
    reply: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{answer_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(str(answer.get("stopReason") or ""), "stop"),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(answer.get("usage")),
    }


class StreamTranslator:
    """ConverseStream messages (event-stream headers + JSON payload) → OpenAI chunk events.

    Pure state machine: ``feed`` returns the bytes to send for one message. ``usage`` holds
    the metadata event's counts; ``finished`` turns true at the metadata event after a
    messageStop; an ``exception`` (or ``error``) message is kept in ``error`` as
    ``(exception type, message)`` and produces nothing.
    """

    def __init__(self, public_model: str, answer_id: str, *, include_usage: bool) -> None:
        self.public_model = public_model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{answer_id}"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.got_usage = False
        self.stopped = False
        self.finished = False
        self.finish_reason = "stop"
        self.error: tuple[str, str] | None = None
        self.deltas = 0
        self._tool_index: dict[int, int] = {}  # contentBlockIndex → OpenAI tool index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.public_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def feed(self, headers: Mapping[str, Any], payload: dict[str, Any]) -> bytes:
        message_type = headers.get(":message-type")
        if message_type == "exception":
            kind = str(headers.get(":exception-type") or "exception")
            self.error = (kind, str(payload.get("message") or payload.get("Message") or ""))
            return b""
        if message_type == "error":
            kind = str(headers.get(":error-code") or "error")
            self.error = (kind, str(headers.get(":error-message") or ""))
            return b""
        kind = headers.get(":event-type")
        if kind == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "contentBlockStart":
            tool_use = (payload.get("start") or {}).get("toolUse")
            if not isinstance(tool_use, dict):
                return b""
            block = int(payload.get("contentBlockIndex") or 0)
            tool_index = self._tool_index.setdefault(block, len(self._tool_index))
            call = {
                "index": tool_index,
                "id": tool_use.get("toolUseId"),
                "type": "function",
                "function": {"name": tool_use.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if isinstance(delta.get("text"), str):
                self.deltas += 1
                return self._chunk({"content": delta["text"]})
            tool_use = delta.get("toolUse")
            if isinstance(tool_use, dict):
                self.deltas += 1
                block = int(payload.get("contentBlockIndex") or 0)
                tool_index = self._tool_index.setdefault(block, len(self._tool_index))
                piece = str(tool_use.get("input") or "")
                return self._chunk(
                    {"tool_calls": [{"index": tool_index, "function": {"arguments": piece}}]}
                )
            return b""  # reasoning, citations: no OpenAI equivalent
        if kind == "messageStop":
            self.stopped = True
            self.finish_reason = FINISH_REASONS.get(str(payload.get("stopReason") or ""), "stop")
            return self._chunk({}, self.finish_reason)
        if kind == "metadata":
            if isinstance(payload.get("usage"), dict):
                self.usage = payload["usage"]
                self.got_usage = True
            if not self.stopped:
                return b""  # metadata before messageStop: the stream is not complete
            self.finished = True
            out = b""
            if self.include_usage:
                usage_chunk = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.public_model,
                    "choices": [],
                    "usage": openai_usage(self.usage),
                }
                out = b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
            return out + b"data: [DONE]\n\n"
        return b""  # contentBlockStop, unknown future events


# --------------------------------------------------------------------------- errors


def _error_type(headers: Any) -> str:
    """``x-amzn-ErrorType`` is ``Name`` or ``Name:http://internal.amazon.com/...``."""
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype") or ""
    return str(raw).split(":", 1)[0].strip()


def _bedrock_error(status: int, body: bytes, headers: Any, error_type: str = "") -> GatewayError:
    """A Bedrock error (``{"message"}`` + ``x-amzn-ErrorType``) → what the client sees.

    The status mapping is the shared one; Bedrock-specific types adjust it: a model timeout
    is a timeout, model errors are upstream failures (retryable), and a validation error
    saying the prompt is too long is ``context_length_exceeded``.
    """
    message = ""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        parsed = orjson.loads(body)
        message = str(parsed.get("message") or parsed.get("Message") or "")[:500]
    error_type = error_type or _error_type(headers)
    if error_type == "ModelTimeoutException":
        return _timeout_error()
    if error_type in ("ModelErrorException", "ModelStreamErrorException"):
        return upstream_error(
            502, f"The upstream model failed: {message}".rstrip(": "), code="upstream_error"
        )
    if error_type == "ValidationException" and _TOO_LONG.search(message):
        return GatewayError(400, message, code="context_length_exceeded")
    if status == 424:  # Bedrock's "failed dependency": the model behind it failed
        return upstream_error(502, "The upstream model failed.", code="upstream_error")
    return _error_from_upstream(status, orjson.dumps({"error": {"message": message}}), headers)


# A stream's exception message carries the union member's name; these are its statuses.
_STREAM_EXCEPTION_STATUS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "throttlingException": 429,
    "serviceUnavailableException": 503,
}


def _stream_exception(kind: str, message: str) -> GatewayError:
    status = _STREAM_EXCEPTION_STATUS.get(kind, 500)
    type_name = kind[:1].upper() + kind[1:]
    return _bedrock_error(status, orjson.dumps({"message": message}), {}, type_name)


def _invalid_response() -> GatewayError:
    return upstream_error(
        502, "The upstream provider sent an invalid response.", code="upstream_invalid_response"
    )


def _broken(message: str = "The upstream stream broke off.") -> GatewayError:
    return upstream_error(502, message, code="upstream_stream_broken")


def _misconfigured(what: str) -> GatewayError:
    # Retryable (as an auth failure): another deployment may be configured correctly.
    return upstream_error(
        502, f"The Bedrock deployment is misconfigured: {what}.", code="upstream_auth_failed"
    )


# --------------------------------------------------------------------------- signing


def region_of(api_base: str, options: Mapping[str, str]) -> str:
    """``options.region``, else the region named in a ``bedrock-runtime`` host, else ''."""
    region = options.get("region") or ""
    if region:
        return region
    match = _REGION_IN_HOST.search(urlsplit(api_base).hostname or "")
    return match.group(1) if match else ""


def credentials_of(api_key: str, options: Mapping[str, str]) -> Credentials:
    """The SigV4 credentials of a deployment (see the module docstring for the rule)."""
    if api_key.lstrip().startswith("{"):
        try:
            parsed = orjson.loads(api_key)
        except orjson.JSONDecodeError:
            raise _misconfigured("api_key is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise _misconfigured("api_key is not a JSON object")
        key_id = str(parsed.get("access_key_id") or "")
        secret = str(parsed.get("secret_access_key") or "")
        token = str(parsed.get("session_token") or "") or None
    else:
        key_id, secret, token = options.get("access_key_id") or "", api_key, None
    if not key_id or not secret:
        raise _misconfigured("the AWS access key id or secret access key is missing")
    return Credentials(key_id, secret, token)


@dataclass(frozen=True, slots=True)
class _Target:
    """One deployment's URLs and how to authenticate its requests; built once."""

    converse: str
    converse_stream: str
    invoke: str
    signer: SigV4Auth | None
    bearer: str | None

    def headers(self, url: str, body: bytes, accept: str) -> dict[str, str]:
        """The request headers, signed over exactly this URL and body when SigV4."""
        headers = {"Content-Type": "application/json", "Accept": accept}
        if self.signer is None:
            headers["Authorization"] = f"Bearer {self.bearer}"
            return headers
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        self.signer.add_auth(request)
        return dict(request.headers.items())


def build_target(dep: DeploymentEntry) -> _Target:
    """URLs and signer of a deployment; a misconfiguration is a retryable 502."""
    options = dict(dep.options)
    base = dep.api_base.rstrip("/") + "/model/" + quote(dep.upstream_model, safe="-._~")
    signer: SigV4Auth | None = None
    bearer: str | None = None
    if options.get("auth") == "bearer":
        if not dep.api_key:
            raise _misconfigured("the Bedrock API key is missing")
        bearer = dep.api_key
    else:
        region = region_of(dep.api_base, options)
        if not region:
            raise _misconfigured("no region (set options.region)")
        signer = SigV4Auth(credentials_of(dep.api_key, options), SERVICE, region)
    return _Target(base + "/converse", base + "/converse-stream", base + "/invoke", signer, bearer)


def _request_id(headers: Any, ctx: RequestContext) -> str:
    return str(headers.get("x-amzn-RequestId") or ctx.request_id)


# --------------------------------------------------------------------------- adapter


class BedrockAdapter:
    """Serves OpenAI chat-completions (and Titan embeddings) from AWS Bedrock."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._targets: dict[tuple, _Target] = {}

    def _target(self, dep: DeploymentEntry) -> _Target:
        """URLs and the signer, built once per deployment, not per request."""
        cache_key = (dep.api_base, dep.api_key, dep.upstream_model, dep.options)
        target = self._targets.get(cache_key)
        if target is None:
            if len(self._targets) > 10_000:  # credentials rotate; never grow without bound
                self._targets.clear()
            target = self._targets[cache_key] = build_target(dep)
        return target

    async def chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        body = orjson.dumps(openai_to_converse(ctx.body))
        target = self._target(dep)
        headers = target.headers(target.converse, body, "application/json")
        status, raw, resp_headers = await self.pool.post(
            ctx, dep, URL(target.converse, encoded=True), body, headers
        )
        if status != 200:
            raise _bedrock_error(status, raw, resp_headers)
        try:
            answer = converse_to_openai(
                orjson.loads(raw), ctx.model_name, _request_id(resp_headers, ctx)
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise _invalid_response() from exc
        usage = answer["usage"]
        ctx.input_tokens = usage["prompt_tokens"]
        ctx.output_tokens = usage["completion_tokens"]
        ctx.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
        await send_body(ctx, 200, orjson.dumps(answer))

    async def stream_chat(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        body = orjson.dumps(openai_to_converse(ctx.body))
        target = self._target(dep)
        headers = target.headers(target.converse_stream, body, EVENT_STREAM)
        t0 = time.perf_counter()
        try:
            async with self.pool.session(dep.api_base).post(
                URL(target.converse_stream, encoded=True),
                data=body,
                headers=headers,
                timeout=self.pool.stream_timeout,
            ) as resp:
                if resp.status != 200:
                    raise _bedrock_error(resp.status, await resp.read(), resp.headers)
                await self._pump(ctx, resp)
        except TimeoutError as exc:
            raise _timeout_error() from exc
        except aiohttp.ClientError as exc:
            raise _connect_error() from exc
        finally:
            ctx.upstream_ms = (time.perf_counter() - t0) * 1000

    async def _send(self, ctx: RequestContext, out: bytes) -> None:
        if not ctx.response_started:
            ctx.ttft_ms = (time.perf_counter() - ctx.started) * 1000
            await start_stream(ctx)
        await send_chunk(ctx, out)

    async def _fail(self, ctx: RequestContext, error: GatewayError) -> GatewayError:
        """After the first byte: end the stream with an explicit error event."""
        ctx.error_code = error.code
        await send_chunk(ctx, sse_error_event(error))
        await end_stream(ctx)
        return error

    async def _pump(self, ctx: RequestContext, resp: aiohttp.ClientResponse) -> None:
        translator = StreamTranslator(
            ctx.model_name, _request_id(resp.headers, ctx), include_usage=ctx.include_usage
        )
        decoder = EventStreamBuffer()
        try:
            async for data in resp.content.iter_any():
                decoder.add_data(data)
                out = b""
                try:
                    for message in decoder:
                        payload = orjson.loads(message.payload) if message.payload else {}
                        out += translator.feed(message.headers, payload)
                        if translator.error is not None or translator.finished:
                            break
                except (ParserError, orjson.JSONDecodeError, AttributeError, TypeError) as exc:
                    if out:
                        await self._send(ctx, out)
                    if not ctx.response_started:
                        raise _invalid_response() from exc
                    raise await self._fail(
                        ctx, _broken("The upstream stream was corrupt.")
                    ) from exc
                if out:
                    await self._send(ctx, out)
                if translator.error is not None:
                    error = _stream_exception(*translator.error)
                    if not ctx.response_started:
                        raise error  # nothing sent yet: the route stage may fail over
                    kind, detail = translator.error
                    message = f"The upstream provider failed mid-stream ({kind}): {detail}"
                    raise await self._fail(ctx, _broken(message[:600].rstrip(": ")))
                if translator.finished:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not ctx.response_started:
                raise
            raise await self._fail(ctx, _broken()) from exc
        finally:
            if translator.got_usage:
                usage = openai_usage(translator.usage)
                ctx.input_tokens = usage["prompt_tokens"]
                ctx.output_tokens = usage["completion_tokens"]
                ctx.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
            if not (translator.got_usage and translator.finished):
                # No final count from the provider: one token per delta is the estimate.
                ctx.usage_estimated = True
                ctx.output_tokens = max(ctx.output_tokens, translator.deltas)
        if not translator.finished:
            error = _broken("The upstream stream ended without completing.")
            if not ctx.response_started:
                raise error
            raise await self._fail(ctx, error)
        await end_stream(ctx)

    # ---- embeddings (InvokeModel, Amazon Titan text embeddings)

    async def embeddings(self, ctx: RequestContext, dep: DeploymentEntry) -> None:
        assert ctx.body is not None
        if not dep.upstream_model.startswith(EMBEDDING_PREFIX):
            raise GatewayError(
                400,
                "This Bedrock model has no embeddings API (Amazon Titan text embeddings only).",
                code="embeddings_not_supported",
            )
        raw_input = ctx.body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise bad_request(
                "Bedrock Titan embeddings take text: 'input' must be a string or strings.",
                code="invalid_value",
                param="input",
            )
        dimensions = ctx.body.get("dimensions")
        target = self._target(dep)
        url = URL(target.invoke, encoded=True)
        limit = asyncio.Semaphore(EMBEDDING_CONCURRENCY)

        async def embed(text: str) -> tuple[list[float], int]:
            request: dict[str, Any] = {"inputText": text}
            if isinstance(dimensions, int) and not isinstance(dimensions, bool):
                request["dimensions"] = dimensions
            body = orjson.dumps(request)
            async with limit:
                headers = target.headers(target.invoke, body, "application/json")
                status, raw, resp_headers = await self.pool.post(ctx, dep, url, body, headers)
            if status != 200:
                raise _bedrock_error(status, raw, resp_headers)
            try:
                answer = orjson.loads(raw)
                vector = [float(v) for v in answer["embedding"]]
                return vector, int(answer.get("inputTextTokenCount") or 0)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise _invalid_response() from exc

        t0 = time.perf_counter()
        results = await asyncio.gather(*(embed(t) for t in texts), return_exceptions=True)
        ctx.upstream_ms = (time.perf_counter() - t0) * 1000
        vectors: list[tuple[list[float], int]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the first failure, in input order
            vectors.append(result)
        as_base64 = ctx.body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for index, (vector, count) in enumerate(vectors):
            tokens += count
            value: Any = vector
            if as_base64:  # what the openai SDK asks for by default
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        ctx.input_tokens = tokens
        ctx.output_tokens = 0
        answer = {
            "object": "list",
            "data": data,
            "model": ctx.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await send_body(ctx, 200, orjson.dumps(answer))
