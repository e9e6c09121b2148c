"""Request and response shapes of the reports API (ninja / pydantic only at the edge).

Money is a decimal string, never a JSON number: floats lose cents.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from ninja import Schema
from pydantic import Field

from apps.api.schemas import Slug, Unset
from apps.reports.models import GROUP_FIELDS

_GROUP = f"({'|'.join(GROUP_FIELDS)})"
GROUP_BY = f"^({_GROUP}(,{_GROUP})*)?$"


class SpendReportQuery(Schema):
    """``end`` must follow ``start``, by at most three years (a 422 otherwise)."""

    start: date = Field(description="first UTC day included (YYYY-MM-DD)", examples=["2026-01-01"])
    end: date = Field(description="first UTC day excluded (YYYY-MM-DD)", examples=["2026-02-01"])
    group_by: str = Field(
        default="",
        pattern=GROUP_BY,
        description=(
            "comma-separated, any of org, team, project, key, model, provider, user "
            "(the key's owner), end_user"
        ),
    )
    granularity: Literal["day", "month"] = "day"
    format: Literal["json", "csv", "xlsx"] = Field(
        default="json", description="json, or a csv / xlsx download"
    )
    org: Slug | Unset = Field(
        default=None,
        description="organisation name; an organisation's token always gets its own",
    )


class FiguresOut(Schema):
    requests: int
    errors: int = Field(description="answered 5xx")
    refusals: int = Field(description="answered 4xx")
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str


class BudgetActualOut(Schema):
    budget_id: int
    organization: str
    level: str
    model: str
    period: str
    period_key: str
    period_start: str | None
    period_end: str | None
    limit_usd: str
    spent_usd: str
    remaining_usd: str
    percent_used: str | None
    hard: bool


class SpendReportOut(Schema):
    start: date
    end: date
    group_by: list[str]
    granularity: str
    organizations: list[str] | None = Field(description="null: every organisation")
    generated_at: str
    rolled_up_at: str | None = Field(description="when the hourly roll-ups last ran")
    partial_from: str | None = Field(
        description=(
            "the hour the roll-ups hold only up to their last run (the current one), when "
            "the range reaches it; rows holding it have partial: true"
        )
    )
    rows: list[dict[str, Any]] = Field(
        description=(
            "period, one field per grouping (a name), the figures (money as exact decimal "
            "strings), and partial"
        )
    )
    totals: FiguresOut
    budgets: list[BudgetActualOut]
