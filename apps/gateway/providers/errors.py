"""How upstream failures become what the client sees: shared by every provider.

Each provider's own ``errors.py`` (Gemini, Bedrock) adjusts its wire's error shape and
then defers to :func:`error_from_upstream`, so a status means the same thing whichever
provider answered it. No message ever carries the provider's key.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import orjson

from apps.gateway.deployment_order import CONTENT_POLICY_CODE, CONTEXT_WINDOW_CODE
from apps.gateway.errors import GatewayError, upstream_error

# How providers say a prompt does not fit the model's context window (OpenAI and Azure
# also send the code), and the codes of a prompt refused on content policy.
CONTEXT_WINDOW_MESSAGE = re.compile(
    r"maximum context length|context[_ ]length|context window|prompt is too long"
    r"|input is too long|exceeds the maximum number of tokens|too many (input )?tokens",
    re.IGNORECASE,
)
CONTENT_POLICY_UPSTREAM_CODES = frozenset({"content_filter", "content_policy_violation"})


def error_from_upstream(status: int, body: bytes, headers: Any) -> GatewayError:
    """Map an upstream failure to what the client should see; never our provider key."""
    message, code, param = "", "", None
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        error = orjson.loads(body)["error"]
        code, param = str(error.get("code") or ""), error.get("param")
        message = str(error["message"])[:500]
    if status in (400, 413, 422):
        # Refusals another model may not make: the route stage can fall back on these.
        if code == CONTEXT_WINDOW_CODE or CONTEXT_WINDOW_MESSAGE.search(message):
            return GatewayError(400, message, code=CONTEXT_WINDOW_CODE, param="messages")
        if code in CONTENT_POLICY_UPSTREAM_CODES:  # e.g. Azure's prompt filter
            return GatewayError(
                400,
                message or "The prompt was refused by the provider's content filter.",
                code=CONTENT_POLICY_CODE,
                param=str(param) if param else None,
            )
    if status == 429:
        retry_after = headers.get("Retry-After") or "1"
        return upstream_error(
            429,
            "The upstream provider is rate limiting; retry later.",
            code="upstream_rate_limited",
            retry_after=retry_after,
        )
    if status in (401, 403):
        return upstream_error(
            502,
            "The upstream provider refused the gateway's credentials.",
            code="upstream_auth_failed",
        )
    if 400 <= status < 500:
        # The provider judged the request itself (e.g. context too long): let the client see why.
        return GatewayError(
            status if status in (400, 404, 413, 422) else 400,
            message or "The upstream provider rejected the request.",
            code="upstream_rejected",
        )
    return upstream_error(
        502, f"The upstream provider failed with status {status}.", code="upstream_error"
    )


def timeout_error() -> GatewayError:
    """The upstream did not answer (or send the next chunk) in time: retryable."""
    return upstream_error(
        504, "The upstream provider did not answer in time.", code="upstream_timeout"
    )


def connect_error() -> GatewayError:
    """The upstream could not be reached (refused, reset, DNS): retryable."""
    return upstream_error(
        502, "The upstream provider could not be reached.", code="upstream_unreachable"
    )


def invalid_response() -> GatewayError:
    """The provider answered 200 with something that is not its wire format."""
    return upstream_error(
        502, "The upstream provider sent an invalid response.", code="upstream_invalid_response"
    )


def stream_broken(message: str = "The upstream stream broke off.") -> GatewayError:
    """A stream that broke or ended early; retryable before the first byte."""
    return upstream_error(502, message, code="upstream_stream_broken")
