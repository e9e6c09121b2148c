"""Request and response shapes of the management API (the edge: ninja / pydantic only here).

Money is a string holding a Decimal, never a JSON number: floats lose cents. It is the
exact figure without trailing-zero noise (``money_exact``: ``0.00000495``, ``5``), the
same text the exports and ``GET /v1/me`` give.

The OpenAPI schema is the contract, checked by schemathesis in CI
(``tests/api/test_schemathesis.py``): every value the schema allows is accepted, and every
value it refuses is a 422 that changes nothing. So query parameters are never "nullable"
(a query string has no null: absent means unset), names carry their slug pattern, ids their
bigint range, request bodies are JSON objects with exactly the documented fields
(``BodyIn``), and the few rules a schema cannot state (a time in the future, a range whose
end follows its start) are written in the operation's description.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from ninja import Schema
from pydantic import (
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from apps.core.money import usd_exact
from apps.keys.models import VirtualKey

SLUG = r"^[-a-zA-Z0-9_]+$"


def money_exact(value: Any) -> Any:
    """An amount (Decimal, or its text from a selector) as the API's exact money text;
    anything else is left to the field's own validation."""
    if isinstance(value, Decimal | int | str) and not isinstance(value, bool):
        try:
            return usd_exact(value)
        except (ArithmeticError, ValueError):
            return value
    return value


MAX_GRACE_SECONDS = 30 * 86_400
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_ID = 2**63 - 1  # a bigint: a larger id would be a database error, not a 404

Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=SLUG)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
# A query string has no null: an optional query parameter is absent or a value, and its
# schema says just the value (``SkipJsonSchema`` keeps pydantic from adding "or null").
Unset = SkipJsonSchema[None]


def _bool_text(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("give true or false")


# ``true`` or ``false`` exactly: a query string carries text, and pydantic would also read
# yes / on / 1 (values the schema could not list as booleans).
QueryBool = Annotated[
    bool, PlainValidator(_bool_text), WithJsonSchema({"type": "string", "enum": ["true", "false"]})
]


def query_bool(default: bool, description: str | None = None) -> Any:
    """A QueryBool parameter whose default the schema gives as text, like its values."""
    return Field(
        default=default,
        description=description,
        json_schema_extra=lambda schema: schema.update(default=str(default).lower()),
    )


# Before the year 9000 in any offset: a later time could not be read back as a Python
# datetime once stored in UTC.
_EXPIRY_TEXT = re.compile(r"^[0-8][0-9]{3}-")


def _expiry_text(value: Any) -> Any:
    """ISO 8601 text only: pydantic would also read a number as a Unix time (``0`` is 1970)."""
    if not isinstance(value, str):
        raise ValueError("give an ISO 8601 date and time with a UTC offset")
    if not _EXPIRY_TEXT.match(value):
        raise ValueError("give a time before the year 9000")
    return value


ExpiresAt = Annotated[
    AwareDatetime,
    BeforeValidator(_expiry_text),
    Field(
        strict=False,
        description="ISO 8601 with a UTC offset, in the future (and before the year 9000)",
        json_schema_extra={"pattern": _EXPIRY_TEXT.pattern, "examples": ["2030-01-01T00:00:00Z"]},
    ),
]


def refuse_undocumented_query(request: HttpRequest, schema: type[Schema] | None = None) -> None:
    """First thing in a view: a query parameter the operation does not document
    (``schema``'s fields) is a 422, like an unknown field in a body — a misspelt filter
    must not be ignored and widen the answer."""
    names = {field.alias or name for name, field in (schema.model_fields if schema else {}).items()}
    unknown = sorted(set(request.GET) - names)
    if unknown:
        raise ValidationError({name: "unknown query parameter" for name in unknown})


class BodyIn(Schema):
    """A request body: a JSON object with only the documented fields, each of its JSON type
    (a list, ``null``, ``"5"`` for a number or a misspelt field is a 422, never read as
    the defaults)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorOut(Schema):
    detail: str


class ValidationErrorItem(Schema):
    type: str
    loc: list[str | int] = Field(description='where, e.g. ["query", "limit"] or ["cursor"]')
    msg: str


class ValidationErrorOut(Schema):
    """422: what was wrong with the request, one item per problem."""

    detail: list[ValidationErrorItem]


def _status(key: VirtualKey) -> str:
    if key.is_revoked:
        return "revoked"
    return "expired" if key.is_expired else "active"


class KeyOut(Schema):
    id: int
    name: str
    prefix: str
    status: str = Field(description="active, expired or revoked")
    organization: str
    team: str
    project: str
    project_id: int
    owner: str | None = Field(description="username of the owning user, if any")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    previous_valid_until: datetime | None = Field(
        description="after a rotation, the previous secret works until then"
    )

    @staticmethod
    def resolve_status(obj: VirtualKey) -> str:
        return _status(obj)

    @staticmethod
    def resolve_organization(obj: VirtualKey) -> str:
        return obj.project.team.organization.name

    @staticmethod
    def resolve_team(obj: VirtualKey) -> str:
        return obj.project.team.name

    @staticmethod
    def resolve_project(obj: VirtualKey) -> str:
        return obj.project.name

    @staticmethod
    def resolve_owner(obj: VirtualKey) -> str | None:
        return obj.owner.get_username() if obj.owner_id else None


KEY_CURSOR = r"^k1\.[0-9]{1,18}$"


class KeyListQuery(Schema):
    org: Slug | Unset = Field(default=None, description="organisation name")
    team: Slug | Unset = Field(default=None, description="team name")
    project: Slug | Unset = Field(default=None, description="project name")
    include_revoked: QueryBool = query_bool(False)
    cursor: Annotated[str, StringConstraints(pattern=KEY_CURSOR)] | Unset = Field(
        default=None, description="next_cursor of the previous page"
    )
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)


class KeyPageOut(Schema):
    items: list[KeyOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: done")


class KeySecretOut(Schema):
    key: KeyOut
    secret: str = Field(description="shown only in this response; Odock keeps a digest only")


class KeyRotatedOut(KeySecretOut):
    previous_valid_until: datetime = Field(description="the old secret works until then")

    @staticmethod
    def resolve_previous_valid_until(obj: Any) -> datetime:
        return obj.key.previous_valid_until


class _KeyCreateIn(BodyIn):
    name: Slug
    expires_at: ExpiresAt | None = None

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= timezone.now():
            raise ValueError("expires_at must be in the future")
        return value.astimezone(UTC) if value is not None else None


class KeyCreateByIdIn(_KeyCreateIn):
    """The project by id."""

    project_id: Id


class KeyCreateByNamesIn(_KeyCreateIn):
    """The project by name, with its team and organisation when several share the name."""

    org: Slug | None = None
    team: Slug | None = None
    project: Slug


KeyCreateIn = KeyCreateByIdIn | KeyCreateByNamesIn


class KeyRotateIn(BodyIn):
    grace_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="how long the previous secret keeps working; default from settings",
    )


class ProjectOut(Schema):
    id: int
    name: str
    is_active: bool


class TeamOut(Schema):
    id: int
    name: str
    is_active: bool
    projects: list[ProjectOut]


class OrganizationOut(Schema):
    id: int
    name: str
    display_name: str
    is_active: bool
    teams: list[TeamOut]


class PolicyModelsOut(Schema):
    effective: list[str] | None = Field(description="null: no level restricts models")
    by_level: dict[str, list[str]]


class PolicyRateLimitOut(Schema):
    kind: str = Field(description="rpm, tpm or concurrency")
    limit: int
    level: str
    model: str | None
    rule_id: int
    binding: bool = Field(description="the tightest limit of its kind and model")


class PolicyBudgetOut(Schema):
    level: str
    limit_usd: str
    period: str
    period_key: str
    period_ends: str | None
    hard: bool
    model: str | None
    spent_usd: str
    remaining_usd: str
    thresholds: list[int]
    rule_id: int
    binding: bool

    @field_validator("limit_usd", "spent_usd", "remaining_usd", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Any:
        return money_exact(value)


class PolicyOut(Schema):
    key: str
    levels: list[str]
    models: PolicyModelsOut
    rate_limits: list[PolicyRateLimitOut]
    budgets: list[PolicyBudgetOut]


class SpendQuery(Schema):
    org: Slug | Unset = Field(default=None, description="organisation name")
    team: Slug | Unset = Field(default=None, description="team name")
    project: Slug | Unset = Field(default=None, description="project name")
    key: Id | Unset = Field(default=None, description="key id")


class SpendOut(Schema):
    budget_id: int
    level: str = Field(description="e.g. org:acme, team:search, project:assistant, key:prod")
    model: str | None
    period: str
    period_key: str
    period_ends: datetime | None
    limit_usd: str
    spent_usd: str
    remaining_usd: str
    percent: str | None = Field(description="spent / limit × 100; null for a zero limit")
    hard: bool

    @field_validator("limit_usd", "spent_usd", "remaining_usd", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Any:
        return money_exact(value)

    @field_validator("percent", mode="before")
    @classmethod
    def _decimal_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Decimal) else value
