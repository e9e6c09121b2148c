"""A fake AWS Bedrock Runtime upstream, for tests and benchmarks of the gateway.

The sibling of :mod:`fakes.openai_server`, speaking Bedrock's wire format:
``POST /model/{modelId}/converse`` (JSON), ``POST /model/{modelId}/converse-stream`` (the
binary ``application/vnd.amazon.eventstream`` framing, encoded here by hand: prelude,
string headers, JSON payload, CRC32s) and ``POST /model/{modelId}/invoke`` for Amazon
Titan text embeddings. A real botocore ``bedrock-runtime`` client pointed at ``server.url``
(``endpoint_url``) works against it::

    with FakeBedrockServer(access_key_id="AKIDFAKE", secret_access_key="s3cret") as server:
        client = botocore.session.get_session().create_client(
            "bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
            aws_access_key_id="AKIDFAKE", aws_secret_access_key="s3cret")

What it checks, like the real service:
  * With credentials configured, every request must carry a valid SigV4 signature
    (service ``bedrock``, the server's region): the fake recomputes it with botocore over
    the received method, raw path, signed headers and body bytes and compares. Missing →
    403 ``MissingAuthenticationTokenException``; unknown key id or wrong session token →
    403 ``UnrecognizedClientException``; wrong signature, scope or a date more than 5
    minutes off → 403 ``InvalidSignatureException``. With ``api_key`` configured,
    ``Authorization: Bearer <api_key>`` (a Bedrock API key) is accepted too.
  * Converse / ConverseStream bodies are validated against botocore's own service model
    (``ParamValidator`` on the operation's input shape, with the URL's model id added and
    the JSON body's base64 blobs decoded to bytes) plus the rules the service adds on top:
    the conversation starts with a user turn and alternates roles, text blocks are not
    blank, tool blocks need a ``toolConfig`` and every ``toolResult`` answers a ``toolUse``
    of the previous turn, image bytes match their declared format. A failure is 400
    ``ValidationException`` with the report.

What it answers:
  * Text "tok0 tok1 ..." (``completion_tokens``, cut to ``inferenceConfig.maxTokens`` with
    ``stopReason: max_tokens``); ``inputTokens`` = characters of the text in ``system`` and
    ``messages`` // 4 (at least 1); ``BedrockBehavior.cache_read_input_tokens`` /
    ``cache_write_input_tokens`` are added to the usage when set.
  * A ``toolUse`` block (``input={"city": "Paris"}``, ``stopReason: tool_use``) when the
    request has tools and the last user message's text contains "weather", or when
    ``toolChoice`` is ``any``/``tool`` (the tool named there, else the first); a text
    answer whenever the last user message carries a ``toolResult``.
  * With ``outputConfig.textFormat`` (structured output), a text block holding JSON that
    fits the schema (``fakes.structured``), streamed in pieces.
  * ``server.tool_uses = N`` answers a tool call with N parallel ``toolUse`` blocks.
  * Streams: messageStart (+ contentBlockStart for a tool call), one contentBlockDelta per
    token (or ``toolUse.input`` JSON pieces), contentBlockStop, messageStop, metadata
    (usage, metrics). Each payload carries the ``p`` padding field the real service adds.
    ``BedrockBehavior.stream_exception`` (a member name such as ``throttlingException``)
    replaces the rest of the stream with an ``exception`` message after
    ``stream_exception_after`` events (0: before any event).
  * Errors: status + ``{"message": ...}`` + ``x-amzn-ErrorType: Name:http://...`` (the
    type follows the status: 429 ``ThrottlingException``, 503
    ``ServiceUnavailableException``, 408 ``ModelTimeoutException``, 424
    ``ModelErrorException``, ...).

Behaviour knobs are ``FakeBehavior``'s (``BedrockBehavior`` adds the ones above), applied in
the same order as the other fakes: authentication, validation, ``latency_ms``, ``hang``,
``fail_status``/``fail_times``, then the answer; ``disconnect_after_chunks=N`` closes the
connection after N content deltas. Like its siblings it imports nothing from Django.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime
import functools
import hmac
import os
import re
import struct
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakes import base
from fakes.base import TOOL_INPUT, TOOL_INPUT_JSON, WEATHER, FakeBehavior, json_response, tokens
from fakes.structured import structured_text

__all__ = [
    "CLI",
    "DEFAULT_PORT",
    "DEFAULT_REGION",
    "TOOL_INPUT",
    "BedrockBehavior",
    "FakeBedrockServer",
    "FakeBehavior",
    "add_cli_arguments",
    "encode_event",
    "main",
    "validate_converse",
]

#: The CLI's default port (OpenAI fake 9001, Anthropic fake 9002).
DEFAULT_PORT = 9004
DEFAULT_REGION = "us-east-1"
#: Titan text embeddings v2's default (and largest) vector size.
TITAN_DIMENSIONS = (256, 512, 1024)

_SERVICE = "bedrock"
_EVENT_STREAM = "application/vnd.amazon.eventstream"
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")
_TOOL_JSON_PIECE = 6  # characters per toolUse.input delta
_MAX_CLOCK_SKEW = datetime.timedelta(minutes=5)
_SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_AUTH_HEADER = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$"
)
_IMAGE_MAGIC = {
    "png": (b"\x89PNG",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),
}

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_ERROR_MESSAGES = {
    408: "Model has timed out in processing the request. Try your request again.",
    429: "Too many requests, please wait before trying again.",
    503: "Bedrock is unable to process your request.",
}
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
_MUST_START_WITH_USER = (
    "A conversation must start with a user message. Try again with a conversation that "
    "starts with a user message."
)
_MUST_ALTERNATE = (
    "A conversation must alternate between user and assistant roles. Make sure the "
    "conversation alternates between user and assistant roles and try again."
)
_BAD_TOKEN = "The security token included in the request is invalid."  # noqa: S105


@dataclasses.dataclass
class BedrockBehavior(FakeBehavior):
    """``FakeBehavior`` plus the knobs only Bedrock has."""

    #: Added to every answer's usage (``cacheReadInputTokens`` / ``cacheWriteInputTokens``).
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    #: Streams: end with an ``exception`` message of this union member (e.g.
    #: ``"throttlingException"``, ``"modelStreamErrorException"``) ...
    stream_exception: str | None = None
    #: ... after this many events (0: before messageStart).
    stream_exception_after: int = 0


# --------------------------------------------------------------------------- event stream


def encode_event(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32),
    string headers (name length, name, type 7, value length, value), payload, CRC32 of
    everything before it."""
    header_bytes = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        header_bytes += (
            struct.pack(">B", len(raw_name))
            + raw_name
            + b"\x07"
            + struct.pack(">H", len(raw_value))
            + raw_value
        )
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack(">I", binascii.crc32(message))


def _padding(size: int) -> str:
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[: max(1, size)]


def _event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    # The real service pads every payload with a "p" field (length obfuscation).
    body = orjson.dumps({**payload, "p": _padding(len(event_type) + 3)})
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_event(headers, body)


def _exception_event(exception_type: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event(headers, orjson.dumps({"message": message}))


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass(frozen=True)
class _Model:
    shapes: Mapping[str, Any]  # operation name -> input shape
    validator: Any


@base.once
def _get_model() -> _Model:
    """botocore's ``bedrock-runtime`` service model (loading it takes a while)."""
    import botocore.session
    from botocore.validate import ParamValidator

    service = botocore.session.get_session().get_service_model("bedrock-runtime")
    shapes = {
        name: service.operation_model(name).input_shape for name in ("Converse", "ConverseStream")
    }
    return _Model(shapes=shapes, validator=ParamValidator())


def _as_params(value: Any, shape: Any, path: str, problems: list[str]) -> Any:
    """The REST JSON body → what ``ParamValidator`` expects: base64 blob text → bytes."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict) and not shape.is_document_type:
        members = shape.members
        return {
            key: _as_params(item, members[key], f"{path}.{key}" if path else key, problems)
            if key in members
            else item
            for key, item in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [
            _as_params(item, shape.member, f"{path}[{index}]", problems)
            for index, item in enumerate(value)
        ]
    if kind == "map" and isinstance(value, dict):
        return {
            key: _as_params(item, shape.value, f"{path}.{key}", problems)
            for key, item in value.items()
        }
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"Invalid base64 value at {path}")
    return value


def _blocks(message: Any) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _check_conversation(body: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """The rules the service enforces beyond the shapes."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _MUST_START_WITH_USER
    tool_blocks = any(
        "toolUse" in block or "toolResult" in block for m in messages for block in _blocks(m)
    )
    if tool_blocks and not body.get("toolConfig"):
        return (
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    previous_role = None
    previous_ids: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if index == 0 and role != "user":
            return _MUST_START_WITH_USER
        if role == previous_role:
            return _MUST_ALTERNATE
        blocks = _blocks(message)
        results = [b["toolResult"] for b in blocks if isinstance(b.get("toolResult"), dict)]
        for position, block in enumerate(blocks):
            if "text" in block and isinstance(block["text"], str) and not block["text"].strip():
                return (
                    f"The text field in the ContentBlock object at messages.{index}.content."
                    f"{position} is blank. Add text to the text field, and try again."
                )
        if role == "user" and (previous_ids or results):
            answered = [str(r.get("toolUseId")) for r in results]
            if len(answered) > len(previous_ids):
                return (
                    f"The number of toolResult blocks at messages.{index}.content exceeds the "
                    "number of toolUse blocks of previous turn."
                )
            missing = [i for i in previous_ids if i not in answered]
            if missing:
                return (
                    f"Expected toolResult blocks at messages.{index}.content for the "
                    f"following Ids: {', '.join(missing)}"
                )
        previous_ids = []
        if role == "assistant":
            previous_ids = [
                str(b["toolUse"].get("toolUseId"))
                for b in blocks
                if isinstance(b.get("toolUse"), dict)
            ]
        previous_role = role
    for index, message in enumerate(params.get("messages") or ()):
        for position, block in enumerate(_blocks(message)):
            image = block.get("image")
            if not isinstance(image, dict):
                continue
            data = (image.get("source") or {}).get("bytes")
            magic = _IMAGE_MAGIC.get(str(image.get("format")), ())
            if isinstance(data, bytes) and magic and not data.startswith(magic):
                return (
                    f"messages.{index}.content.{position}.image: The provided image does not "
                    "match the specified image format."
                )
    return None


def validate_converse(operation: str, model_id: str, body: Any) -> str | None:
    """Check a Converse / ConverseStream body like Bedrock would; what is wrong, or ``None``.

    ``operation`` is ``"Converse"`` or ``"ConverseStream"``; ``model_id`` the decoded id
    from the URL. botocore's ``ParamValidator`` checks the shapes (unknown keys, types,
    required members, tagged unions, minimum lengths); then the service's own rules.
    """
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object."
    model = _get_model()
    shape = model.shapes[operation]
    if "modelId" in body:
        return 'Unknown parameter in input: "modelId" (it belongs in the URL path)'
    problems: list[str] = []
    params = _as_params({"modelId": model_id, **body}, shape, "", problems)
    if problems:
        return "; ".join(problems)
    report = model.validator.validate(params, shape)
    if report.has_errors():
        return report.generate_report()
    return _check_conversation(body, params)


def _validate_titan(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Malformed input request: expected a JSON object, please reformat your input."
    extra = sorted(set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"})
    if extra:
        return (
            f"Malformed input request: #: extraneous key [{extra[0]}] is not permitted, "
            "please reformat your input and try again."
        )
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        return (
            "Malformed input request: #/inputText: expected minLength: 1, please reformat "
            "your input and try again."
        )
    dimensions = body.get("dimensions", 1024)
    if dimensions not in TITAN_DIMENSIONS or isinstance(dimensions, bool):
        return (
            f"Malformed input request: #/dimensions: {dimensions} is not a valid enum value, "
            "please reformat your input and try again."
        )
    return None


# --------------------------------------------------------------------------- payloads


def _text_length(blocks: Any) -> int:
    total = 0
    if not isinstance(blocks, list):
        return 0
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            total += len(block["text"])
        elif isinstance(block.get("toolResult"), dict):
            total += _text_length(block["toolResult"].get("content"))
    return total


def _input_tokens(body: Mapping[str, Any]) -> int:
    """Rough token estimate: characters of the text in system + messages // 4, at least 1."""
    total = _text_length(body.get("system"))
    for message in body.get("messages") or ():
        total += _text_length(_blocks(message))
    return max(1, total // 4)


def _tool_to_call(body: Mapping[str, Any]) -> str | None:
    """The name of the tool the fake calls for this request, or ``None`` for text."""
    config = body.get("toolConfig")
    tools = config.get("tools") if isinstance(config, dict) else None
    names = [
        str(t["toolSpec"].get("name"))
        for t in tools or ()
        if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
    ]
    if not names:
        return None
    messages = body.get("messages") or []
    last_user = next(
        (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {}
    )
    blocks = _blocks(last_user)
    if any("toolResult" in b for b in blocks):
        return None  # the tool answered: now the model talks
    choice = config.get("toolChoice") if isinstance(config, dict) else None
    if isinstance(choice, dict) and isinstance(choice.get("tool"), dict):
        return str(choice["tool"].get("name"))
    text = " ".join(b["text"] for b in blocks if isinstance(b.get("text"), str))
    if (isinstance(choice, dict) and "any" in choice) or WEATHER.search(text):
        return names[0]
    return None


def _structured(body: Mapping[str, Any]) -> str | None:
    """The JSON answer to ``outputConfig.textFormat`` (structured output), else ``None``."""
    config = body.get("outputConfig")
    text_format = config.get("textFormat") if isinstance(config, dict) else None
    if not isinstance(text_format, dict) or text_format.get("type") != "json_schema":
        return None
    definition = (text_format.get("structure") or {}).get("jsonSchema") or {}
    try:
        schema = orjson.loads(definition.get("schema") or "null")
    except orjson.JSONDecodeError:
        schema = None
    return structured_text(schema)


def _plan(body: Mapping[str, Any], behavior: FakeBehavior) -> base.Plan:
    config = body.get("inferenceConfig")
    max_tokens = config.get("maxTokens") if isinstance(config, dict) else None
    reasons = ("tool_use", "max_tokens", "end_turn")
    return base.plan_answer(_tool_to_call(body), max_tokens, behavior, reasons)


def _usage(body: Mapping[str, Any], plan: base.Plan, behavior: FakeBehavior) -> dict[str, Any]:
    input_tokens = _input_tokens(body)
    usage: dict[str, Any] = {"inputTokens": input_tokens, "outputTokens": plan.output_tokens}
    total = input_tokens + plan.output_tokens
    cache_read = int(getattr(behavior, "cache_read_input_tokens", 0) or 0)
    cache_write = int(getattr(behavior, "cache_write_input_tokens", 0) or 0)
    if cache_read or cache_write:
        usage["cacheReadInputTokens"] = cache_read
        usage["cacheWriteInputTokens"] = cache_write
        total += cache_read + cache_write
    usage["totalTokens"] = total
    return usage


@functools.lru_cache(maxsize=64)
def _text_deltas(count: int) -> tuple[bytes, ...]:
    return tuple(
        _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": token}})
        for token in tokens(count)
    )


_TOOL_DELTAS: tuple[bytes, ...] = tuple(
    _event(
        "contentBlockDelta",
        {
            "contentBlockIndex": 0,
            "delta": {"toolUse": {"input": piece}},
        },
    )
    for piece in base.pieces(base.TOOL_INPUT_JSON, _TOOL_JSON_PIECE)
)
_MESSAGE_START = _event("messageStart", {"role": "assistant"})
_BLOCK_STOP = _event("contentBlockStop", {"contentBlockIndex": 0})


def _error_type_for(status: int) -> str:
    return _ERROR_TYPES.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )


def _error(status: int, message: str, error_type: str | None = None) -> web.Response:
    headers = {
        "x-amzn-ErrorType": (error_type or _error_type_for(status)) + _ERROR_TYPE_SUFFIX,
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return json_response({"message": message}, status, headers)


def _json(payload: Any) -> web.Response:
    return json_response(payload, headers={"x-amzn-RequestId": str(uuid.uuid4())})


# --------------------------------------------------------------------------- server


class FakeBedrockServer(base.FakeServer):
    """A Bedrock Runtime server with scriptable behaviour.

    The lifecycle, counters and ``requests`` recording are :class:`~fakes.base.FakeServer`'s
    (``url``, ``http://host:port``, is a botocore ``endpoint_url`` and a Provider's
    ``api_base``); each record also has ``raw_path``, ``model_id`` and ``operation``.
    ``api_key`` is a Bedrock API key accepted as ``Authorization: Bearer``; the AWS
    credentials, when given, make SigV4 signatures mandatory.
    """

    label = "Bedrock"
    default_port = DEFAULT_PORT
    api_key_help = "accept 'Authorization: Bearer KEY' (a Bedrock API key)"
    load_validators = staticmethod(_get_model)
    behavior_class = BedrockBehavior

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Its own options, beyond the shared ones."""
        parser.add_argument(
            "--access-key-id",
            default=os.environ.get("FAKE_BEDROCK_ACCESS_KEY_ID"),
            help="require SigV4 signatures by this key id (env FAKE_BEDROCK_ACCESS_KEY_ID)",
        )
        parser.add_argument(
            "--secret-access-key",
            default=os.environ.get("FAKE_BEDROCK_SECRET_ACCESS_KEY"),
            help="its secret (env FAKE_BEDROCK_SECRET_ACCESS_KEY)",
        )
        parser.add_argument("--session-token", default=None, help="require this session token")
        parser.add_argument("--region", default=DEFAULT_REGION, help="the signing region")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Its own constructor arguments, from the parsed options."""
        names = ("access_key_id", "secret_access_key", "session_token", "region")
        return {name: getattr(args, name) for name in names}

    def __init__(
        self,
        *args: Any,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str = DEFAULT_REGION,
        **kwargs: Any,
    ) -> None:
        """``FakeServer``'s arguments (``behavior`` a ``BedrockBehavior`` by default) and the
        AWS credentials to require signatures by."""
        super().__init__(*args, **kwargs)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.region = region
        #: ``toolUse`` blocks in a tool-calling answer (parallel calls when > 1).
        self.tool_uses = 1
        self._signer: SigV4Auth | None = None
        if access_key_id and secret_access_key:
            credentials = Credentials(access_key_id, secret_access_key, session_token)
            self._signer = SigV4Auth(credentials, _SERVICE, region)

    # ---- authentication

    def _check_auth(self, request: web.BaseRequest, raw: bytes) -> web.Response | None:
        """``None`` when the request is authenticated (or no credentials are configured)."""
        if self._signer is None and self.api_key is None:
            return None
        given = request.headers.get("Authorization")
        if given is None:
            return _error(
                403, "Missing Authentication Token", "MissingAuthenticationTokenException"
            )
        if given.startswith("Bearer "):
            if self.api_key is not None and hmac.compare_digest(given[7:], self.api_key):
                return None
            return _error(
                403,
                "Invalid API Key format: Must start with pre-defined prefix",
                "AccessDeniedException",
            )
        if self._signer is None:
            return _error(403, _BAD_TOKEN, "UnrecognizedClientException")
        return self._check_sigv4(request, raw, given)

    def _check_sigv4(self, request: web.BaseRequest, raw: bytes, given: str) -> web.Response | None:
        match = _AUTH_HEADER.match(given)
        if match is None:
            return _error(
                403,
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'.",
                "IncompleteSignatureException",
            )
        key_id, day, region, service, signed, signature = match.groups()
        if key_id != self.access_key_id:
            return _error(403, _BAD_TOKEN, "UnrecognizedClientException")
        if region != self.region:
            return _error(
                403,
                f"Credential should be scoped to a valid region, not '{region}'.",
                "InvalidSignatureException",
            )
        if service != _SERVICE:
            return _error(
                403,
                f"Credential should be scoped to correct service: '{_SERVICE}'.",
                "InvalidSignatureException",
            )
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            when = datetime.datetime.strptime(amz_date, _SIGV4_TIMESTAMP).replace(
                tzinfo=datetime.UTC
            )
        except ValueError:
            return _error(
                403,
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                "'Date' header.",
                "IncompleteSignatureException",
            )
        now = datetime.datetime.now(datetime.UTC)
        if abs(now - when) > _MAX_CLOCK_SKEW or day != amz_date[:8]:
            return _error(
                403,
                f"Signature expired: {amz_date} is now earlier or later than the allowed window.",
                "InvalidSignatureException",
            )
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return _error(403, _BAD_SIGNATURE, "InvalidSignatureException")
        if self.session_token is not None:
            token = request.headers.get("X-Amz-Security-Token")
            if token != self.session_token or "x-amz-security-token" not in names:
                return _error(403, _BAD_TOKEN, "UnrecognizedClientException")
        headers: dict[str, str] = {}
        for name in names:
            values = request.headers.getall(name, None)
            if values is None:
                return _error(403, _BAD_SIGNATURE, "InvalidSignatureException")
            headers[name] = ",".join(values)
        url = f"http://{request.headers.get('Host', '')}{request.raw_path}"
        aws_request = AWSRequest(method=request.method, url=url, data=raw, headers=headers)
        aws_request.context["timestamp"] = amz_date
        signer = self._signer
        assert signer is not None  # only called when credentials are configured
        canonical = signer.canonical_request(aws_request)
        expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
        if not hmac.compare_digest(expected, signature):
            return _error(403, _BAD_SIGNATURE, "InvalidSignatureException")
        return None

    # ---- request handling

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        raw, body, bad_json = await self._read_body(request)  # the raw body is signed
        match = _PATH.match(request.raw_path)
        model_id = unquote(match.group(1)) if match else ""
        operation = match.group(2) if match else ""
        if self.record:
            self._record(
                request, body, raw_path=request.raw_path, model_id=model_id, operation=operation
            )

        denied = self._check_auth(request, raw)
        if denied is not None:
            return denied
        if match is None:
            return _error(
                404, f"Unknown operation: {method} {request.path}", "UnknownOperationException"
            )
        if method != "POST":
            return _error(
                405, f"Method {method} not allowed for {request.path}.", "MethodNotAllowedException"
            )
        if bad_json or not isinstance(body, dict):
            return _error(
                400, "Unable to parse the request body as JSON.", "SerializationException"
            )

        behavior = self.behavior
        if operation == "invoke":
            if not model_id.startswith("amazon.titan-embed"):
                return _error(
                    400,
                    "The fake serves InvokeModel for amazon.titan-embed models only, "
                    f"not '{model_id}'.",
                )
            if behavior.validate:
                problem = _validate_titan(body)
                if problem is not None:
                    return _error(400, problem)
            return await self._with_effects(behavior, self._titan(body))
        if behavior.validate:
            name = "Converse" if operation == "converse" else "ConverseStream"
            problem = validate_converse(name, model_id, body)
            if problem is not None:
                return _error(400, problem)
        if operation == "converse-stream":
            return await self._stream(request, body, behavior)
        return await self._with_effects(behavior, self._converse(body, behavior))

    def _failure(self, status: int) -> web.Response:
        """The ``fail_status`` answer in Bedrock's shape."""
        return _error(status, base.failure_message(status, _ERROR_MESSAGES))

    def _converse(self, body: Mapping[str, Any], behavior: FakeBehavior) -> web.Response:
        plan = _plan(body, behavior)
        if plan.tool is not None:
            content: list[dict[str, Any]] = [
                {
                    "toolUse": {
                        "toolUseId": f"tooluse_fake{next(self._ids):012d}",
                        "name": plan.tool,
                        "input": dict(TOOL_INPUT),
                    }
                }
                for _ in range(max(1, self.tool_uses))
            ]
        elif _structured(body) is not None:
            content = [{"text": _structured(body)}]
            plan = dataclasses.replace(plan, stop_reason="end_turn")
        else:
            content = [{"text": "".join(tokens(plan.output_tokens))}]
        payload = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": plan.stop_reason,
            "usage": _usage(body, plan, behavior),
            "metrics": {"latencyMs": 42},
        }
        return _json(payload)

    def _titan(self, body: Mapping[str, Any]) -> web.Response:
        text = str(body.get("inputText") or "")
        dimensions = int(body.get("dimensions") or 1024)
        vector = base.embedding(text, dimensions)
        return _json(
            {
                "embedding": vector,
                "embeddingsByType": {"float": vector},
                "inputTextTokenCount": max(1, len(text) // 4),
            }
        )

    def _stream_events(
        self, body: dict[str, Any], behavior: FakeBehavior
    ) -> tuple[list[bytes], int]:
        """All event-stream messages of one stream, encoded up front, and the delta count.

        ``events[0]`` holds everything before the first delta (messageStart, and the
        contentBlockStart of a tool call), so ``disconnect_after_chunks=N`` cuts after N
        deltas, as in the other fakes.
        """
        plan = _plan(body, behavior)
        head = _MESSAGE_START
        if plan.tool is not None:
            start = {
                "toolUse": {"toolUseId": f"tooluse_fake{next(self._ids):012d}", "name": plan.tool}
            }
            head += _event("contentBlockStart", {"contentBlockIndex": 0, "start": start})
            deltas: Sequence[bytes] = _TOOL_DELTAS
        elif _structured(body) is not None:
            deltas = tuple(
                _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                for piece in base.pieces(_structured(body) or "", _TOOL_JSON_PIECE)
            )
            plan = dataclasses.replace(plan, stop_reason="end_turn")
        else:
            deltas = _text_deltas(plan.output_tokens)
        metadata = {"usage": _usage(body, plan, behavior), "metrics": {"latencyMs": 42}}
        more: list[bytes] = []  # parallel tool calls after the first: blocks 1, 2...
        for block in range(1, max(1, self.tool_uses) if plan.tool is not None else 1):
            start = {
                "toolUse": {"toolUseId": f"tooluse_fake{next(self._ids):012d}", "name": plan.tool}
            }
            more.append(_event("contentBlockStart", {"contentBlockIndex": block, "start": start}))
            more.append(
                _event(
                    "contentBlockDelta",
                    {"contentBlockIndex": block, "delta": {"toolUse": {"input": TOOL_INPUT_JSON}}},
                )
            )
            more.append(_event("contentBlockStop", {"contentBlockIndex": block}))
        events = [
            head,
            *deltas,
            _BLOCK_STOP,
            *more,
            _event("messageStop", {"stopReason": plan.stop_reason}),
            _event("metadata", metadata),
        ]
        exception = getattr(behavior, "stream_exception", None)
        if exception:  # BedrockBehavior's knob: an exception message replaces the rest
            after = max(0, int(getattr(behavior, "stream_exception_after", 0) or 0))
            message = f"The fake upstream was told to fail the stream with {exception}."
            events = [*events[:after], _exception_event(exception, message)]
        return events, len(deltas)

    def _stream_headers(self, body: dict[str, Any]) -> Mapping[str, str]:
        return {"Content-Type": _EVENT_STREAM, "x-amzn-RequestId": str(uuid.uuid4())}


# --------------------------------------------------------------------------- CLI

CLI = base.Cli(FakeBedrockServer, "fakes.bedrock_server", "A fake AWS Bedrock Runtime upstream.")
add_cli_arguments = CLI.add_arguments
main = CLI.main

if __name__ == "__main__":
    sys.exit(main())
