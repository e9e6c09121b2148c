"""A Bedrock error (``{"message"}`` + ``x-amzn-ErrorType``) → what the client sees.

The status mapping is the shared one (:mod:`apps.gateway.providers.errors`); Bedrock's
error types adjust it. A stream's ``exception`` message is mapped the same way, so
throttling / unavailable / model stream errors before the first byte fail over.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import orjson

from apps.gateway.errors import GatewayError, upstream_error
from apps.gateway.providers.errors import error_from_upstream, timeout_error

# How Bedrock (and the models behind it) say the prompt does not fit the context window.
_TOO_LONG = re.compile(
    r"(?:input|prompt)\b.{0,40}?\b(?:too long|exceeds?)"
    r"|too many (?:input )?tokens|context (?:length|window)",
    re.IGNORECASE,
)


def _error_type(headers: Any) -> str:
    """``x-amzn-ErrorType`` is ``Name`` or ``Name:http://internal.amazon.com/...``."""
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype") or ""
    return str(raw).split(":", 1)[0].strip()


def bedrock_error(status: int, body: bytes, headers: Any, error_type: str = "") -> GatewayError:
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
        return timeout_error()
    if error_type in ("ModelErrorException", "ModelStreamErrorException"):
        return upstream_error(
            502, f"The upstream model failed: {message}".rstrip(": "), code="upstream_error"
        )
    if error_type == "ValidationException" and _TOO_LONG.search(message):
        return GatewayError(400, message, code="context_length_exceeded")
    if status == 424:  # Bedrock's "failed dependency": the model behind it failed
        return upstream_error(502, "The upstream model failed.", code="upstream_error")
    return error_from_upstream(status, orjson.dumps({"error": {"message": message}}), headers)


# A stream's exception message carries the union member's name; these are its statuses.
_STREAM_EXCEPTION_STATUS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "throttlingException": 429,
    "serviceUnavailableException": 503,
}


def stream_exception(kind: str, message: str) -> GatewayError:
    """A stream's ``exception`` message, mapped as the HTTP error it stands for."""
    status = _STREAM_EXCEPTION_STATUS.get(kind, 500)
    type_name = kind[:1].upper() + kind[1:]
    return bedrock_error(status, orjson.dumps({"message": message}), {}, type_name)


def misconfigured(what: str) -> GatewayError:
    """A deployment whose credentials or region cannot work."""
    # Retryable (as an auth failure): another deployment may be configured correctly.
    return upstream_error(
        502, f"The Bedrock deployment is misconfigured: {what}.", code="upstream_auth_failed"
    )
