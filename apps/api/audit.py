"""Audit log search and export for the management API, under /api/v1/audit/.

Thin: filters are parsed and applied by ``apps.audit.selectors`` (the admin's code), pages
are keyset pages on ``(created_at desc, id desc)`` behind an opaque cursor, and exports are
streamed by ``apps.audit.export``. An org-scoped token sees its organisation only; naming
another organisation is a 403, and a team, project or key of another organisation matches
nothing.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Schema
from pydantic import Field, field_validator

from apps.api.auth import AdminTokenAuth
from apps.api.models import AdminToken
from apps.api.schemas import ErrorOut
from apps.audit import export
from apps.audit.models import RequestLog
from apps.audit.selectors import (
    FILTER_PARAMS,
    AuditFilter,
    Position,
    audit_filter_parse,
    request_log_get,
    request_log_page,
    request_log_search,
)

router = Router(auth=AdminTokenAuth(), tags=["audit"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CURSOR_TAG = "a1:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut}


class AuditFilterQuery(Schema):
    """The filters, as query parameters (shared with the admin and exports)."""

    from_: str | None = Field(
        default=None,
        alias="from",
        description="start, inclusive: ISO 8601 time (UTC if no offset), date, or a "
        "duration back from now such as 30m, 24h, 7d",
    )
    to: str | None = Field(
        default=None, description="end, exclusive: like from; a bare date includes that day"
    )
    org: str | None = Field(default=None, description="organisation id or name")
    team: str | None = Field(default=None, description="team id or name")
    project: str | None = Field(default=None, description="project id or name")
    key: str | None = Field(default=None, description="key id, name or visible prefix sk-odock-…")
    model: str | None = Field(default=None, description="the model asked for")
    provider: str | None = None
    status: str | None = Field(default=None, description="a class (2xx, 4xx, 5xx) or a code")
    error_code: str | None = None
    finding: str | None = Field(default=None, description="a guardrail detector name")
    cost_min: Decimal | None = Field(default=None, ge=0, description="USD, inclusive")
    cost_max: Decimal | None = Field(default=None, ge=0, description="USD, inclusive")
    endpoint: str | None = Field(default=None, description="e.g. chat.completions, embeddings")
    stream: bool | None = None

    def audit_filter(self) -> AuditFilter:
        """The shared parser validates what the schema's types cannot (times, status)."""
        values = self.model_dump(by_alias=True)
        return audit_filter_parse({name: values.get(name) for name in FILTER_PARAMS})


class AuditSearchQuery(AuditFilterQuery):
    cursor: str | None = Field(default=None, description="next_cursor of the previous page")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    include_content: bool = Field(
        default=False, description="include captured prompts and responses (can be large)"
    )


class AuditExportQuery(AuditFilterQuery):
    format: Literal["jsonl", "csv"] = "jsonl"


class AuditRecordOut(Schema):
    request_id: str
    created_at: str = Field(description="ISO 8601, UTC, to the microsecond")
    organization_id: int | None
    team_id: int | None
    project_id: int | None
    key_id: int | None
    key_prefix: str
    user_id: int | None
    endpoint: str
    model_requested: str
    model_served: str
    provider: str
    deployment: str
    stream: bool
    status_code: int
    error_code: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    usage_estimated: bool
    cost_usd: str = Field(description="USD as a decimal string")
    latency_ms: float
    upstream_ms: float | None
    overhead_ms: float | None
    ttft_ms: float | None
    client_disconnected: bool
    client_ip: str | None
    user_agent: str
    decisions: Any
    attempts: Any
    findings: Any
    finding_types: list[str] = Field(description="detector names of the findings")
    content: Any = Field(description="captured prompt and response, or null")
    chain: str
    seq: int | None
    prev_hash: str
    hash: str

    @field_validator("cost_usd", mode="before")
    @classmethod
    def _decimal_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Decimal) else value

    @field_validator("created_at", mode="before")
    @classmethod
    def _full_precision(cls, value: Any) -> Any:
        """Not ninja's encoder, which cuts times to milliseconds: audit times stay exact
        (and equal to the export's)."""
        return value.isoformat() if isinstance(value, datetime) else value

    @field_validator("finding_types", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [name for name in value.split(",") if name] if isinstance(value, str) else value


class AuditPageOut(Schema):
    items: list[AuditRecordOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: done")


def cursor_encode(position: Position) -> str:
    """Opaque to clients (base64 of the last row's time in µs and id)."""
    micros = (position.created_at - _EPOCH) // _MICROSECOND
    raw = f"{CURSOR_TAG}{micros}:{position.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _digits(text: str, most: int) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= most


def cursor_decode(cursor: str | None) -> Position | None:
    """None for the first page; a malformed cursor is a 422."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith(CURSOR_TAG):
            micros, _, pk = text[len(CURSOR_TAG) :].partition(":")
            if _digits(micros.removeprefix("-"), 17) and _digits(pk, 18):
                return Position(_EPOCH + int(micros) * _MICROSECOND, int(pk))
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        pass
    raise ValidationError({"cursor": "invalid cursor"})


def _scope(request: HttpRequest) -> int | None:
    token: AdminToken = request.auth  # type: ignore[attr-defined]
    return token.organization_id


@router.get(
    "/records",
    response={200: AuditPageOut, **ERRORS},
    summary="Search audit records",
)
def audit_records_list(request: HttpRequest, filters: Query[AuditSearchQuery]) -> dict[str, Any]:
    """Newest first, one page at a time; follow ``next_cursor`` for the rest. Every row
    is returned exactly once, even when many share a timestamp."""
    qs = request_log_search(filters=filters.audit_filter(), organization_id=_scope(request))
    if not filters.include_content:
        qs = qs.defer("content")
    after = cursor_decode(filters.cursor)
    rows, next_position = request_log_page(qs, after=after, limit=filters.limit)
    if not filters.include_content:
        for row in rows:
            row.content = None
    return {
        "items": rows,
        "next_cursor": cursor_encode(next_position) if next_position else None,
    }


@router.get(
    "/records/{request_id}",
    response={200: AuditRecordOut, 404: ErrorOut, **ERRORS},
    summary="One audit record",
)
def audit_record_get(request: HttpRequest, request_id: str) -> RequestLog:
    return request_log_get(request_id=request_id, organization_id=_scope(request))


@router.get(
    "/export",
    summary="Export audit records (JSONL or CSV, streamed)",
)
def audit_export(request: HttpRequest, filters: Query[AuditExportQuery]) -> StreamingHttpResponse:
    """Every column of every matching record, newest first, streamed as it is read.

    No time window is implied: without ``from`` the export covers all time."""
    qs = request_log_search(filters=filters.audit_filter(), organization_id=_scope(request))
    return export.export_response(qs, filters.format, request=request)
