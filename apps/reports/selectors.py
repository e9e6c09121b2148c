"""Reads behind the finance spend report: built from hourly roll-ups only, never from the
raw request log, so a year's report costs the same however busy the year was.

Ranges are UTC days, start inclusive, end exclusive. Money stays Decimal throughout: the
database sums ``numeric`` columns exactly, so report totals equal the raw records' sums
to the last of the 12 stored decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncMonth
from django.utils import timezone

from apps.keys.models import VirtualKey
from apps.policies.alerts import budget_organization
from apps.policies.models import LEVELS, Budget
from apps.policies.rollup import Window, period_window
from apps.policies.spend import budget_filter
from apps.reports.histogram import histogram_merge, histogram_percentile
from apps.reports.models import GROUP_FIELDS, Granularity, UsageRollup
from apps.reports.rollup import partial_from, rollup_freshness
from apps.tenancy.models import Organization, Project, Team

MAX_RANGE_DAYS = 3 * 366
PERCENT_QUANTUM = Decimal("0.01")
WINDOWS_PER_QUERY = 100
FIGURES = ("requests", "errors", "refusals", "input_tokens", "output_tokens", "cached_tokens")
NONE_LABEL = "(none)"


@dataclass(frozen=True, slots=True)
class SpendReportSpec:
    """What a report covers. ``organization_ids=None``: every organisation (platform)."""

    start: date
    end: date
    group_by: tuple[str, ...] = ()
    granularity: str = Granularity.DAY
    organization_ids: tuple[int, ...] | None = None

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(0), tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.combine(self.end, time(0), tzinfo=UTC)


def group_by_parse(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"team,model"`` (or a list) → ``("team", "model")`` in the order given, validated."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    cleaned: list[str] = []
    for name in (n.strip().lower() for n in names):
        if not name:
            continue
        if name not in GROUP_FIELDS:
            raise ValidationError(
                {"group_by": f"unknown grouping {name!r}; use any of {', '.join(GROUP_FIELDS)}"}
            )
        if name not in cleaned:
            cleaned.append(name)
    return tuple(cleaned)


def spend_report_spec(
    *,
    start: date,
    end: date,
    group_by: str | Iterable[str] | None = None,
    granularity: str = Granularity.DAY,
    organization_ids: Iterable[int] | None = None,
) -> SpendReportSpec:
    """A validated spec; ValidationError (field → message) otherwise."""
    if end <= start:
        raise ValidationError({"end": "end must be after start (the end day is excluded)"})
    if (end - start).days > MAX_RANGE_DAYS:
        raise ValidationError({"end": f"a report covers at most {MAX_RANGE_DAYS} days"})
    if granularity not in Granularity.values:
        raise ValidationError({"granularity": "day or month"})
    return SpendReportSpec(
        start=start,
        end=end,
        group_by=group_by_parse(group_by),
        granularity=granularity,
        organization_ids=None if organization_ids is None else tuple(sorted(organization_ids)),
    )


@dataclass(frozen=True, slots=True)
class Figures:
    requests: int = 0
    errors: int = 0
    refusals: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Figures:
        return cls(
            **{name: row[name] or 0 for name in FIGURES},
            cost_usd=row["cost_usd"] or Decimal(0),
        )


@dataclass(frozen=True, slots=True)
class SpendRow:
    period: str  # "2026-01-15" per day, "2026-01" per month
    groups: dict[str, str]  # group name → label, in the spec's order
    figures: Figures
    partial: bool = False  # holds the hour the roll-ups have only in part


@dataclass(frozen=True, slots=True)
class BudgetActual:
    """One budget in one of its periods overlapping the report: limit against spend (the
    whole period's, from the roll-ups)."""

    budget_id: int
    organization: str
    level: str
    model: str
    period: str
    period_key: str
    period_start: datetime | None
    period_end: datetime | None
    limit_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    percent_used: Decimal | None
    hard: bool


@dataclass(frozen=True, slots=True)
class SpendReportData:
    spec: SpendReportSpec
    organizations: list[str]  # names in scope; empty list with ids None: every one
    rows: list[SpendRow]
    totals: Figures
    budgets: list[BudgetActual]
    generated_at: datetime
    rolled_up_at: datetime | None
    # The hour being rolled up as traffic comes (None: the range is past it, or no
    # roll-up ran): rows holding it are marked partial.
    partial_from: datetime | None = None

    @property
    def partial_period(self) -> str:
        """The period label (day or month) holding ``partial_from``; "" if none. Labels
        sort as text, so a row is partial when its period is not before this one."""
        if self.partial_from is None:
            return ""
        return _period_label(self.partial_from, self.spec.granularity)


def _figure_sums() -> dict[str, Sum]:
    return {name: Sum(name) for name in (*FIGURES, "cost_usd")}


def rollups_in_scope(spec: SpendReportSpec) -> QuerySet[UsageRollup]:
    qs = UsageRollup.objects.filter(hour__gte=spec.start_at, hour__lt=spec.end_at)
    if spec.organization_ids is not None:
        qs = qs.filter(organization_id__in=spec.organization_ids)
    return qs


def _labels(group: str, ids: set[Any]) -> dict[Any, str]:
    """Names for the ids of one grouping (one query); deleted objects show as ``#id``."""
    real = {i for i in ids if i not in (None, "")}
    labels: dict[Any, str] = {None: NONE_LABEL, "": NONE_LABEL}
    if group in ("model", "provider", "end_user"):
        return labels | {i: i for i in real}
    if group == "user":
        users = get_user_model().objects.filter(pk__in=real)
        found = {u.pk: u.get_username() for u in users}
        return labels | {i: found.get(i, f"#{i}") for i in real}
    if group == "org":
        found = dict(Organization.objects.filter(pk__in=real).values_list("pk", "name"))
    elif group == "team":
        found = dict(Team.objects.filter(pk__in=real).values_list("pk", "name"))
    elif group == "project":
        found = {
            p.pk: f"{p.team.name}/{p.name}"
            for p in Project.objects.filter(pk__in=real).select_related("team")
        }
    else:
        found = {
            k.pk: f"{k.name} ({k.prefix})"
            for k in VirtualKey.objects.filter(pk__in=real).only("pk", "name", "prefix")
        }
    return labels | {i: found.get(i, f"#{i}") for i in real}


def _period_label(value: datetime | date, granularity: str) -> str:
    day = value.astimezone(UTC).date() if isinstance(value, datetime) else value
    return f"{day:%Y-%m}" if granularity == Granularity.MONTH else day.isoformat()


def _period_end(start: datetime | date, granularity: str) -> datetime:
    if not isinstance(start, datetime):
        start = datetime.combine(start, time(0), tzinfo=UTC)
    start = start.astimezone(UTC)
    if granularity == Granularity.MONTH:
        return (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1)


def spend_rows(spec: SpendReportSpec, partial: datetime | None = None) -> list[SpendRow]:
    """One row per period and group, ordered by period then the groups' ids; rows whose
    period ends after ``partial`` (the hour the roll-ups hold in part) are marked."""
    trunc = TruncMonth if spec.granularity == Granularity.MONTH else TruncDay
    fields = [GROUP_FIELDS[g] for g in spec.group_by]
    raw = list(
        rollups_in_scope(spec)
        .annotate(bucket_period=trunc("hour", tzinfo=UTC))
        .values("bucket_period", *fields)
        .annotate(**_figure_sums())
        .order_by("bucket_period", *fields)
    )
    labels = {
        group: _labels(group, {r[GROUP_FIELDS[group]] for r in raw}) for group in spec.group_by
    }
    return [
        SpendRow(
            period=_period_label(r["bucket_period"], spec.granularity),
            groups={g: labels[g][r[GROUP_FIELDS[g]]] for g in spec.group_by},
            figures=Figures.from_row(r),
            partial=partial is not None
            and _period_end(r["bucket_period"], spec.granularity) > partial,
        )
        for r in raw
    ]


def spend_totals(spec: SpendReportSpec) -> Figures:
    return Figures.from_row(rollups_in_scope(spec).aggregate(**_figure_sums()))


# --- Budget vs actual -----------------------------------------------------------------


def budgets_in_scope(organization_ids: Sequence[int] | None) -> QuerySet[Budget]:
    """The hierarchy's budgets (a person's budget belongs to no organisation: it spans
    their keys wherever they are, so no organisation's report lists it)."""
    qs = Budget.objects.filter(user__isnull=True).select_related(
        "organization",
        "team__organization",
        "project__team__organization",
        "key__project__team__organization",
        "model",
    )
    if organization_ids is not None:
        ids = list(organization_ids)
        qs = qs.filter(
            Q(organization_id__in=ids)
            | Q(team__organization_id__in=ids)
            | Q(project__team__organization_id__in=ids)
            | Q(key__project__team__organization_id__in=ids)
        )
    return qs


def budget_windows(period: str, start: datetime, end: datetime) -> list[Window]:
    """The budget's periods (the gateway's calendar) that overlap ``[start, end)``."""
    first = period_window(period, start)
    if first.start is None:  # total: one window for all time
        return [first]
    windows = [first]
    while windows[-1].end is not None and windows[-1].end < end:
        windows.append(period_window(period, windows[-1].end))
    return windows


def _window_q(window: Window) -> Q:
    q = Q()
    if window.start is not None:
        q &= Q(hour__gte=window.start)
    if window.end is not None:
        q &= Q(hour__lt=window.end)
    return q


def budget_spend_in_windows(budget: Budget, windows: list[Window]) -> list[Decimal]:
    """Spend per window from the roll-ups: the policies app's filter for what counts
    against this budget, summed per window (conditional aggregates, few queries)."""
    base = UsageRollup.objects.filter(budget_filter(budget))
    spent: list[Decimal] = []
    for i in range(0, len(windows), WINDOWS_PER_QUERY):
        part = windows[i : i + WINDOWS_PER_QUERY]
        row = base.aggregate(
            **{f"w{j}": Sum("cost_usd", filter=_window_q(w)) for j, w in enumerate(part)}
        )
        spent += [row[f"w{j}"] or Decimal(0) for j in range(len(part))]
    return spent


def _level_rank(budget: Budget) -> int:
    return next(i for i, level in enumerate(LEVELS) if getattr(budget, f"{level}_id"))


def budget_vs_actual(spec: SpendReportSpec) -> list[BudgetActual]:
    """Every budget of the organisations in scope, per period overlapping the report."""
    budgets = sorted(
        budgets_in_scope(spec.organization_ids),
        key=lambda b: (budget_organization(b).name, _level_rank(b), b.level, b.pk),
    )
    rows = []
    for budget in budgets:
        windows = budget_windows(budget.period, spec.start_at, spec.end_at)
        for window, spent in zip(windows, budget_spend_in_windows(budget, windows), strict=True):
            limit = budget.limit_usd
            percent = None
            if limit > 0:
                percent = (spent * 100 / limit).quantize(PERCENT_QUANTUM, ROUND_HALF_UP)
            rows.append(
                BudgetActual(
                    budget_id=budget.pk,
                    organization=budget_organization(budget).name,
                    level=budget.level,
                    model=budget.model.name if budget.model_id else "all models",
                    period=budget.period,
                    period_key=window.key,
                    period_start=window.start,
                    period_end=window.end,
                    limit_usd=limit,
                    spent_usd=spent,
                    remaining_usd=max(limit - spent, Decimal(0)),
                    percent_used=percent,
                    hard=budget.hard,
                )
            )
    return rows


# --- The whole report -----------------------------------------------------------------


def spend_report_build(spec: SpendReportSpec) -> SpendReportData:
    """Rows, totals and budget vs actual for one spec (reads only roll-ups and budgets)."""
    organizations: list[str] = []
    if spec.organization_ids is not None:
        organizations = list(
            Organization.objects.filter(pk__in=spec.organization_ids)
            .order_by("name")
            .values_list("name", flat=True)
        )
    rolled_up_at = rollup_freshness()
    partial = partial_from(rolled_up_at)
    if partial is not None and not spec.start_at <= partial < spec.end_at:
        partial = None
    return SpendReportData(
        spec=spec,
        organizations=organizations,
        rows=spend_rows(spec, partial),
        totals=spend_totals(spec),
        budgets=budget_vs_actual(spec),
        generated_at=timezone.now(),
        rolled_up_at=rolled_up_at,
        partial_from=partial,
    )


# --- Latency --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencySummary:
    requests: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def latency_summary(rollups: QuerySet[UsageRollup]) -> LatencySummary:
    """Mean and estimated percentiles of any set of roll-ups (the dashboard's figures):
    histograms merged element-wise, no raw record read."""
    rows = list(rollups.values_list("requests", "latency_ms_sum", "latency_histogram"))
    requests = sum(r[0] for r in rows)
    merged = histogram_merge(r[2] for r in rows)
    return LatencySummary(
        requests=requests,
        mean_ms=sum(r[1] for r in rows) / requests if requests else None,
        p50_ms=histogram_percentile(merged, 0.50),
        p95_ms=histogram_percentile(merged, 0.95),
        p99_ms=histogram_percentile(merged, 0.99),
    )


def day_range_default(today: date | None = None) -> tuple[date, date]:
    """The current calendar month so far, today included, as ``(start, end)``: on a new
    install last month is empty, and this month is what everyone looks at first (the
    monthly delivery sends the previous month by itself)."""
    today = today or timezone.now().astimezone(UTC).date()
    return today.replace(day=1), today + timedelta(days=1)
