"""JSON-RPC error answers of ``/mcp`` and the codes the audit record gives them."""

from __future__ import annotations

from typing import Any

from apps.gateway.errors import GatewayError

# The standard codes, then the server range (-32000…-32099).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
UNAUTHORIZED = -32001
RESOURCE_NOT_FOUND = -32002
NOT_ALLOWED = -32003
APPROVAL_REQUIRED = -32004
GUARDRAIL_BLOCKED = -32005
RATE_LIMITED = -32029
UNAVAILABLE = -32050


class McpFailure(GatewayError):
    """A JSON-RPC error answer: the gateway's one error type, so the same pipeline ends a
    request with it. ``status`` and ``code`` are what the audit record says; the HTTP
    status is ``http_status`` (200 for most: the error is in the JSON-RPC body)."""

    def __init__(
        self,
        rpc_code: int,
        message: str,
        *,
        status: int,
        code: str,
        data: dict[str, Any] | None = None,
        http_status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(status, message, code=code, headers=headers)
        self.rpc_code = rpc_code
        self.data = data
        self.http_status = http_status

    def answer(self, rpc_id: Any) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.rpc_code, "message": self.message}
        error["data"] = {"code": self.code, **(self.data or {})}
        return {"jsonrpc": "2.0", "id": rpc_id, "error": error}


def invalid_params(message: str) -> McpFailure:
    """A malformed request parameter (nothing was done)."""
    return McpFailure(INVALID_PARAMS, message, status=400, code="invalid_params")


def with_http(failure: McpFailure, status: int) -> McpFailure:
    failure.http_status = status
    return failure
