"""Google's error shape → what the client sees.

Gemini answers a bad API key with 400 ``INVALID_ARGUMENT`` (reason ``API_KEY_INVALID``):
that is our credential, not the client's request, so it becomes 502
``upstream_auth_failed``; a 429's ``RetryInfo.retryDelay`` becomes the ``Retry-After``.
Everything else is the shared mapping.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import orjson

from apps.gateway.errors import GatewayError
from apps.gateway.providers.errors import error_from_upstream


def _retry_delay(error: dict[str, Any]) -> str | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"37s"``, ``"1.5s"``), rounded up."""
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            with contextlib.suppress(ValueError):
                return str(max(1, math.ceil(float(delay[:-1]))))
    return None


def _key_invalid(error: dict[str, Any]) -> bool:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason") == "API_KEY_INVALID":
            return True
    return "API key not valid" in str(error.get("message") or "")


def gemini_error(status: int, body: bytes, headers: Any) -> GatewayError:
    """Google's error shape → what the client sees (``error_from_upstream`` plus Gemini's
    400-for-a-bad-key and ``RetryInfo``); never the provider key."""
    error: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        parsed = orjson.loads(body).get("error")
        error = parsed if isinstance(parsed, dict) else {}
    if status == 400 and _key_invalid(error):
        status = 401
    if status == 429 and not headers.get("Retry-After"):
        delay = _retry_delay(error)
        if delay is not None:
            headers = {"Retry-After": delay}
    return error_from_upstream(status, body, headers)
