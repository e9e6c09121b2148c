"""The one error type a stage raises to end a request with an OpenAI-style body."""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    """Ends the request: ``status`` and an ``{"error": {...}}`` body, never a secret."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": self.param,
                }
            }
        )


def bad_request(message: str, *, code: str = "invalid_request", param: str | None = None):
    return GatewayError(400, message, code=code, param=param)


def unauthorized(message: str, *, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(401, message, code=code)


def forbidden(message: str, *, code: str) -> GatewayError:
    return GatewayError(403, message, code=code, type="permission_error")


def model_not_found(name: str) -> GatewayError:
    """The same 404 for a model that does not exist and one the key may not see, so an
    answer never tells which."""
    return GatewayError(
        404, f"The model '{name}' does not exist.", code="model_not_found", param="model"
    )


def upstream_error(status: int, message: str, *, code: str, retry_after: str | None = None):
    headers = [(b"retry-after", retry_after.encode())] if retry_after else None
    error_type = "rate_limit_error" if status == 429 else "api_error"
    return GatewayError(status, message, code=code, type=error_type, headers=headers)
