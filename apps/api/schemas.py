"""Request and response shapes of the management API (the edge: ninja / pydantic only here).

Money is a string holding a Decimal, never a JSON number: floats lose cents.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ninja import Schema
from pydantic import AwareDatetime, Field, field_validator, model_validator

from apps.keys.models import VirtualKey

SLUG = r"^[-a-zA-Z0-9_]+$"
MAX_GRACE_SECONDS = 30 * 86_400
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


class ErrorOut(Schema):
    detail: str


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


class KeyListQuery(Schema):
    org: str | None = Field(default=None, description="organisation name")
    team: str | None = Field(default=None, description="team name (needs org for platform tokens)")
    project: str | None = Field(default=None, description="project name (needs team)")
    include_revoked: bool = False
    cursor: str | None = Field(default=None, description="next_cursor of the previous page")
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


class KeyCreateIn(Schema):
    """Name the project by id, or by names (``team`` and ``project``; ``org`` too for a
    platform token, since team names are unique only within an organisation)."""

    project_id: int | None = None
    org: str | None = None
    team: str | None = None
    project: str | None = None
    name: str = Field(min_length=1, max_length=100, pattern=SLUG)
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_way_to_name_the_project(self) -> KeyCreateIn:
        by_name = self.org is not None or self.team is not None or self.project is not None
        if self.project_id is not None and by_name:
            raise ValueError("give project_id or org/team/project names, not both")
        if self.project_id is None and self.project is None:
            raise ValueError("give project_id, or the project's team and project names")
        return self


class KeyRotateIn(Schema):
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


class PolicyOut(Schema):
    key: str
    levels: list[str]
    models: PolicyModelsOut
    rate_limits: list[PolicyRateLimitOut]
    budgets: list[PolicyBudgetOut]


class SpendQuery(Schema):
    org: str | None = Field(default=None, description="organisation name")
    team: str | None = Field(default=None, description="team name (needs org for platform tokens)")
    project: str | None = Field(default=None, description="project name (needs team)")
    key: int | None = Field(default=None, description="key id")


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

    @field_validator("limit_usd", "spent_usd", "remaining_usd", "percent", mode="before")
    @classmethod
    def _decimal_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Decimal) else value
