"""Audit log search and export for the management API, under /api/v1/audit/.

Thin: filters are parsed and applied by ``apps.audit.selectors`` (the admin's code), pages
are keyset pages on ``(created_at desc, id desc)`` behind an opaque cursor, and exports are
streamed by ``apps.audit.export``. A token sees its audit area only (an org token its
organisation, a team token its team; a finance token none: 403); naming another
organisation is a 403, and a team, project or key outside the area matches nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Path, Query, Router, Schema
from pydantic import AfterValidator, Field, StringConstraints, field_validator

from apps.api.auth import AdminTokenAuth
from apps.api.models import AdminToken
from apps.api.schemas import (
    ErrorOut,
    QueryBool,
    Unset,
    ValidationErrorOut,
    money_exact,
    query_bool,
    refuse_undocumented_query,
)
from apps.api.scope import token_area
from apps.audit import export
from apps.audit.models import RequestLog
from apps.audit.selectors import (
    FILTER_PARAMS,
    AuditFilter,
    Position,
    audit_filter_parse,
    parse_instant,
    request_log_get,
    request_log_page,
    request_log_search,
)
from apps.compliance.selectors import changes_visible
from apps.identity.roles import Capability
from apps.identity.scope import Area

router = Router(auth=AdminTokenAuth(), tags=["audit"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut, 422: ValidationErrorOut}


# What each filter accepts, stated in the schema so that every value it allows works
# (``apps.audit.selectors.audit_filter_parse`` is the shared parser behind it).
RELATIVE = r"^[0-9]{1,6}(m|min|h|d|w)$"
_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_RELATIVE = re.compile(RELATIVE)
LEVEL = r"^[-A-Za-z0-9_]{1,100}$"  # an id, a name (a slug) or a key's visible prefix
TEXT = r"^[^\x00-\x1f\x7f]{1,300}$"  # any text but control characters (NUL included)
AMOUNT = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"
AUDIT_CURSOR = r"^a1\.-?[0-9]{1,18}\.[0-9]{1,18}$"
REQUEST_ID = r"^[-A-Za-z0-9_.:]{1,40}$"


def _instant_text(value: str) -> str:
    """An RFC 3339 date-time, a date or a duration such as ``24h``: exactly the schema's
    ``anyOf`` (Django's parser alone would also take other spellings)."""
    if _DATE_TIME.match(value):
        return value.upper()
    if _DATE.match(value) or _RELATIVE.match(value):
        return value
    raise ValueError("give an RFC 3339 date-time, a date, or a duration such as 24h or 7d")


Instant = Annotated[
    str,
    AfterValidator(_instant_text),
    Field(
        json_schema_extra={
            "anyOf": [{"format": "date-time"}, {"format": "date"}, {"pattern": RELATIVE}]
        }
    ),
]


def _pattern(regex: str) -> Any:
    return Annotated[str, StringConstraints(pattern=regex)]


class AuditFilterQuery(Schema):
    """The filters, as query parameters (shared with the admin and exports). An empty
    range (``from`` not before ``to``, ``cost_min`` above ``cost_max``) is a 422."""

    from_: Instant | Unset = Field(
        default=None,
        alias="from",
        description="start, inclusive: RFC 3339 date-time, date, or a duration back from "
        "now such as 30m, 24h, 7d",
    )
    to: Instant | Unset = Field(
        default=None, description="end, exclusive: like from; a bare date includes that day"
    )
    org: _pattern(LEVEL) | Unset = Field(default=None, description="organisation id or name")
    team: _pattern(LEVEL) | Unset = Field(default=None, description="team id or name")
    project: _pattern(LEVEL) | Unset = Field(default=None, description="project id or name")
    key: _pattern(LEVEL) | Unset = Field(
        default=None, description="key id, name or visible prefix sk-odock-…"
    )
    model: _pattern(TEXT) | Unset = Field(default=None, description="the model asked for")
    provider: _pattern(TEXT) | Unset = None
    status: _pattern(r"^[1-5]([xX]{2}|[0-9]{2})$") | Unset = Field(
        default=None, description="a class (2xx, 4xx, 5xx) or a code"
    )
    error_code: _pattern(TEXT) | Unset = None
    finding: _pattern(r"^[A-Za-z0-9_.:-]{1,100}$") | Unset = Field(
        default=None, description="a guardrail detector name"
    )
    cost_min: _pattern(AMOUNT) | Unset = Field(default=None, description="USD, inclusive")
    cost_max: _pattern(AMOUNT) | Unset = Field(default=None, description="USD, inclusive")
    endpoint: _pattern(TEXT) | Unset = Field(
        default=None, description="e.g. chat.completions, embeddings"
    )
    stream: QueryBool | Unset = None

    def audit_filter(self) -> AuditFilter:
        """The shared parser validates what the schema cannot (an empty range)."""
        values = self.model_dump(by_alias=True)
        return audit_filter_parse({name: values.get(name) for name in FILTER_PARAMS})


class AuditSearchQuery(AuditFilterQuery):
    cursor: _pattern(AUDIT_CURSOR) | Unset = Field(
        default=None, description="next_cursor of the previous page"
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    include_content: QueryBool = query_bool(
        False, "include captured prompts and responses (can be large)"
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
        return money_exact(value)

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
    """``a1.<µs since 1970>.<id>``: the last row's position. Clients pass it back as it is;
    the schema's pattern says which cursors exist, so every one it allows works."""
    micros = (position.created_at - _EPOCH) // _MICROSECOND
    return f"a1.{micros}.{position.id}"


def cursor_decode(cursor: str | None) -> Position | None:
    """None for the first page (the schema checked the form). A time beyond what Python
    can hold is clamped: "after 10,000 AD" starts at the newest row."""
    if not cursor:
        return None
    _, micros, pk = cursor.split(".")
    bounded = min(max(int(micros), _MIN_MICROS), _MAX_MICROS)
    return Position(_EPOCH + bounded * _MICROSECOND, int(pk))


def _scope(request: HttpRequest) -> Area:
    """The token's audit area: an org admin's or auditor's organisation, a team admin's or
    team auditor's team (403 for a finance token: its role has no audit capability)."""
    token: AdminToken = request.auth  # type: ignore[attr-defined]
    return token_area(token, Capability.AUDIT)


@router.get(
    "/records",
    response={200: AuditPageOut, **ERRORS},
    summary="Search audit records",
)
def audit_records_list(request: HttpRequest, filters: Query[AuditSearchQuery]) -> dict[str, Any]:
    """Newest first, one page at a time; follow ``next_cursor`` for the rest. Every row
    is returned exactly once, even when many share a timestamp."""
    refuse_undocumented_query(request, AuditSearchQuery)
    qs = request_log_search(filters=filters.audit_filter(), area=_scope(request))
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
def audit_record_get(
    request: HttpRequest, request_id: str = Path(..., pattern=REQUEST_ID)
) -> RequestLog:
    refuse_undocumented_query(request)
    return request_log_get(request_id=request_id, area=_scope(request))


EXPORT_RESPONSE = {
    "description": "One JSON object per line (jsonl) or a header line and one row per "
    "record (csv), streamed as the records are read",
    "content": {
        media_type.split(";")[0]: {"schema": {"type": "string"}}
        for media_type in export.FORMATS.values()
    },
}


@router.get(
    "/export",
    response=ERRORS,
    openapi_extra={"responses": {200: EXPORT_RESPONSE}},
    summary="Export audit records (JSONL or CSV, streamed)",
)
def audit_export(request: HttpRequest, filters: Query[AuditExportQuery]) -> StreamingHttpResponse:
    """Every column of every matching record, newest first, streamed as it is read.

    No time window is implied: without ``from`` the export covers all time."""
    refuse_undocumented_query(request, AuditExportQuery)
    qs = request_log_search(filters=filters.audit_filter(), area=_scope(request))
    return export.export_response(qs, filters.format, request=request)


# --- The change trail ----------------------------------------------------------------------

CHANGE_CURSOR = r"^c1\.-?[0-9]{1,18}\.[0-9]{1,18}$"
OBJECT_TYPE = r"^[a-z][a-z0-9_]{0,49}\.[a-z][a-z0-9_]{0,49}$"


class ChangeQuery(Schema):
    """Filters of the change trail; an empty range matches nothing."""

    from_: Instant | Unset = Field(
        default=None, alias="from", description="start, inclusive (as for records)"
    )
    to: Instant | Unset = Field(default=None, description="end, exclusive (as for records)")
    object_type: _pattern(OBJECT_TYPE) | Unset = Field(
        default=None, description="app_label.model, e.g. keys.virtualkey"
    )
    actor: _pattern(TEXT) | Unset = Field(
        default=None, description='who: a username, "api token <name>", "odock_apply"'
    )
    cursor: _pattern(CHANGE_CURSOR) | Unset = Field(
        default=None, description="next_cursor of the previous page"
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class ChangeOut(Schema):
    id: int
    created_at: str = Field(description="ISO 8601, UTC, to the microsecond")
    actor: str = Field(description='the person or tool: a username, "api token <name>", …')
    actor_user_id: int | None
    actor_role: str = Field(
        description='the role(s) in effect, e.g. "team_admin of team:acme/search"'
    )
    action: str = Field(description="create, update or delete")
    object_type: str
    object_id: str
    object_repr: str
    organization_id: int | None
    team_id: int | None
    project_id: int | None
    changes: Any = Field(description='field → {"before", "after"}; a secret only as "changed"')
    request_id: str
    client_ip: str | None

    @field_validator("created_at", mode="before")
    @classmethod
    def _full_precision(cls, value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value


class ChangePageOut(Schema):
    items: list[ChangeOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: done")


@router.get(
    "/changes",
    response={200: ChangePageOut, **ERRORS},
    summary="The configuration change trail",
)
def audit_changes_list(request: HttpRequest, filters: Query[ChangeQuery]) -> dict[str, Any]:
    """Who changed what, with which role, newest first, within the token's audit area
    (an org token: its organisation's objects; a team token: its team's; platform-wide
    objects for platform tokens only). Follow ``next_cursor`` for the rest."""
    refuse_undocumented_query(request, ChangeQuery)
    qs = changes_visible(_scope(request))
    now = datetime.now(UTC)
    if filters.from_ is not None:
        qs = qs.filter(created_at__gte=parse_instant(filters.from_, now=now))
    if filters.to is not None:
        qs = qs.filter(created_at__lt=parse_instant(filters.to, now=now, end_of_day=True))
    if filters.object_type is not None:
        qs = qs.filter(object_type=filters.object_type)
    if filters.actor is not None:
        qs = qs.filter(actor=filters.actor)
    cursor = filters.cursor
    after = cursor_decode("a1." + cursor.removeprefix("c1.")) if cursor else None
    rows, next_position = request_log_page(qs, after=after, limit=filters.limit)
    next_cursor = None
    if next_position is not None:
        next_cursor = "c1." + cursor_encode(next_position).removeprefix("a1.")
    return {"items": rows, "next_cursor": next_cursor}
