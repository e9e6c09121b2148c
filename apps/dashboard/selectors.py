"""Reads behind the admin dashboard's charts.

Every chart reads the hourly roll-ups (``apps.reports``' ``UsageRollup``), never the raw
request log, so a 30-day chart costs the same however busy the month was. Two exceptions,
both bounded: guardrail findings (roll-ups do not carry them; the most recent
``FINDINGS_SCAN_LIMIT`` records of the range are counted) and the live feed's first rows.

Money stays ``Decimal`` and leaves as strings; rates and latencies are floats (they are
not money).

Every read is limited to the viewer's spend area (``DashboardScope.area``, from
``apps.dashboard.permissions.spend_area``): roll-ups and records by their organisation,
team and project; budgets attached inside the area only (``apps.identity.areas``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.dashboard.formats import money
from apps.dashboard.live import feed_item
from apps.guardrails.detectors import rule_and_kind
from apps.identity.areas import budget_q
from apps.identity.scope import Area
from apps.keys.models import VirtualKey
from apps.policies.alerts import budget_organization
from apps.policies.models import LEVELS, Budget
from apps.policies.rollup import Window, period_window
from apps.policies.spend import budget_filter
from apps.reports.histogram import histogram_empty, histogram_merge, histogram_percentile
from apps.reports.models import UsageRollup
from apps.reports.rollup import partial_from, rollup_freshness
from apps.reports.selectors import budgets_in_scope
from apps.tenancy.models import Organization, Team

# range name → (length, bucket): hourly points for a day, daily points beyond.
RANGES: dict[str, tuple[timedelta, str]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}
SERIES_LIMIT = 8  # stacked series shown; the rest are summed into "Other"
OTHER_LABEL = "Other"
NONE_LABEL = "(none)"
TOP_KEYS_LIMIT = 10
BUDGETS_LIMIT = 20
BUDGETS_PER_QUERY = 100
FINDINGS_SCAN_LIMIT = 50_000
RECENT_LIMIT = 50


@dataclass(frozen=True, slots=True)
class DashboardScope:
    """What the dashboard shows: ``[start, end)`` in UTC, bucketed per hour or day, for one
    organisation or (``organization_id=None``) all of them, within the viewer's ``area``."""

    range: str
    bucket: str
    start: datetime
    end: datetime
    organization_id: int | None
    area: Area = Area(everything=True)

    def buckets(self) -> list[datetime]:
        step = timedelta(hours=1) if self.bucket == "hour" else timedelta(days=1)
        out, at = [], self.start
        while at < self.end:
            out.append(at)
            at += step
        return out

    def bucket_of(self, hour: datetime) -> datetime:
        hour = hour.astimezone(UTC)
        if self.bucket == "day":
            return hour.replace(hour=0, minute=0, second=0, microsecond=0)
        return hour.replace(minute=0, second=0, microsecond=0)

    def labels(self) -> list[str]:
        return [b.isoformat() for b in self.buckets()]


def dashboard_scope(
    *,
    range_name: str = "24h",
    organization_id: int | None = None,
    area: Area | None = None,
    now: datetime | None = None,
) -> DashboardScope:
    """The range ending with the current hour (24h) or day (7d, 30d); ValidationError for
    an unknown range. ``area`` None: the whole platform (callers pass the viewer's)."""
    if range_name not in RANGES:
        raise ValidationError({"range": f"use one of {', '.join(RANGES)}"})
    length, bucket = RANGES[range_name]
    now = (now or timezone.now()).astimezone(UTC)
    if bucket == "hour":
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:
        end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return DashboardScope(
        range=range_name,
        bucket=bucket,
        start=end - length,
        end=end,
        organization_id=organization_id,
        area=Area(everything=True) if area is None else area,
    )


def _bucket(scope: DashboardScope) -> F | TruncDay:
    """The bucket as SQL, so the database returns one row per bucket, not per hour."""
    return TruncDay("hour", tzinfo=UTC) if scope.bucket == "day" else F("hour")


def in_area(qs: QuerySet, area: Area) -> QuerySet:
    """Roll-ups or request records inside the area (both carry org, team, project ids)."""
    return area.filter(qs, org="organization_id", team="team_id", project="project_id")


def rollups_in(scope: DashboardScope) -> QuerySet[UsageRollup]:
    qs = in_area(UsageRollup.objects.filter(hour__gte=scope.start, hour__lt=scope.end), scope.area)
    if scope.organization_id is not None:
        qs = qs.filter(organization_id=scope.organization_id)
    return qs


def organization_choices(area: Area | None = None) -> list[dict[str, Any]]:
    """The organisation picker: the organisations the area touches (all for None)."""
    qs = Organization.objects.all() if area is None else area.organizations()
    return [{"id": pk, "name": name} for pk, name in qs.order_by("name").values_list("pk", "name")]


# --- Overview -------------------------------------------------------------------------


def overview(scope: DashboardScope) -> dict[str, Any]:
    """The range's totals (the figures above the charts)."""
    row = rollups_in(scope).aggregate(
        requests=Sum("requests"),
        errors=Sum("errors"),
        refusals=Sum("refusals"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost_usd"),
    )
    requests = row["requests"] or 0
    rolled = rollup_freshness()
    partial = partial_from(rolled)
    if partial is not None and not scope.start <= partial < scope.end:
        partial = None
    return {
        "range": scope.range,
        "start": scope.start.isoformat(),
        "end": scope.end.isoformat(),
        "requests": requests,
        "errors": row["errors"] or 0,
        "refusals": row["refusals"] or 0,
        "error_rate": _percent(row["errors"] or 0, requests),
        "refusal_rate": _percent(row["refusals"] or 0, requests),
        "input_tokens": row["input_tokens"] or 0,
        "output_tokens": row["output_tokens"] or 0,
        "total_usd": money(row["cost"]),
        "rolled_up_at": rolled.isoformat() if rolled else None,
        # The hour the roll-ups hold up to their last run only (the page marks it).
        "partial_from": partial.isoformat() if partial else None,
    }


def _percent(part: int, whole: int) -> float | None:
    return round(part * 100 / whole, 2) if whole else None


# --- Spend over time ------------------------------------------------------------------


def _team_labels(ids: Iterable[Any]) -> dict[Any, str]:
    real = {i for i in ids if i is not None}
    found = {
        t.pk: f"{t.organization.name}/{t.name}"
        for t in Team.objects.filter(pk__in=real).select_related("organization")
    }
    return {None: NONE_LABEL} | {i: found.get(i, f"#{i}") for i in real}


def spend_series(scope: DashboardScope, by: str) -> dict[str, Any]:
    """Spend per bucket, one stacked series per team or model (the top ``SERIES_LIMIT`` by
    spend in the range; the others summed as "Other")."""
    if by not in ("team", "model"):
        raise ValidationError({"by": "team or model"})
    field = "team_id" if by == "team" else "model_requested"
    index = {b: i for i, b in enumerate(scope.buckets())}
    per_group: dict[Any, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * len(index))
    rows = (
        rollups_in(scope)
        .annotate(bucket=_bucket(scope))
        .values("bucket", field)
        .annotate(cost=Sum("cost_usd"))
        .order_by()
    )
    for row in rows:
        per_group[row[field]][index[scope.bucket_of(row["bucket"])]] += row["cost"] or 0
    ranked = sorted(per_group.items(), key=lambda item: (-sum(item[1]), str(item[0])))
    kept, folded = ranked[:SERIES_LIMIT], ranked[SERIES_LIMIT:]
    if by == "team":
        labels = _team_labels(k for k, _ in kept)
    else:
        labels = {k: k or NONE_LABEL for k, _ in kept}
    series = [{"key": k, "label": labels[k], "data": [money(v) for v in data]} for k, data in kept]
    if folded:
        other = [sum(col, Decimal(0)) for col in zip(*(d for _, d in folded), strict=True)]
        series.append({"key": None, "label": OTHER_LABEL, "data": [money(v) for v in other]})
    total = sum((sum(d) for d in per_group.values()), Decimal(0))
    return {
        "by": by,
        "bucket": scope.bucket,
        "labels": scope.labels(),
        "series": series,
        "total_usd": money(total),
    }


# --- Top keys -------------------------------------------------------------------------


def top_keys(scope: DashboardScope, limit: int = TOP_KEYS_LIMIT) -> list[dict[str, Any]]:
    """The keys that spent most in the range (requests without a key are not a key)."""
    rows = list(
        rollups_in(scope)
        .filter(key_id__isnull=False)
        .values("key_id")
        .annotate(cost=Sum("cost_usd"), requests=Sum("requests"))
        .order_by("-cost", "key_id")[:limit]
    )
    keys = {
        k.pk: k
        for k in VirtualKey.objects.filter(pk__in=[r["key_id"] for r in rows]).only(
            "pk", "name", "prefix"
        )
    }
    out = []
    for r in rows:
        key = keys.get(r["key_id"])
        out.append(
            {
                "key_id": r["key_id"],
                "name": key.name if key else f"#{r['key_id']}",
                "label": f"{key.name} ({key.prefix})" if key else f"#{r['key_id']}",
                "cost_usd": money(r["cost"]),
                "requests": r["requests"] or 0,
            }
        )
    return out


# --- Error and refusal rates ----------------------------------------------------------


def rates(scope: DashboardScope) -> dict[str, Any]:
    """Per bucket: requests, 5xx (errors) and 4xx (refusals), and both as % of requests."""
    n = len(scope.buckets())
    index = {b: i for i, b in enumerate(scope.buckets())}
    requests, errors, refusals = [0] * n, [0] * n, [0] * n
    rows = (
        rollups_in(scope)
        .annotate(bucket=_bucket(scope))
        .values("bucket")
        .annotate(r=Sum("requests"), e=Sum("errors"), f=Sum("refusals"))
        .order_by()
    )
    for row in rows:
        i = index[scope.bucket_of(row["bucket"])]
        requests[i] += row["r"] or 0
        errors[i] += row["e"] or 0
        refusals[i] += row["f"] or 0
    return {
        "bucket": scope.bucket,
        "labels": scope.labels(),
        "requests": requests,
        "errors": errors,
        "refusals": refusals,
        "error_rate": [_percent(e, r) for e, r in zip(errors, requests, strict=True)],
        "refusal_rate": [_percent(f, r) for f, r in zip(refusals, requests, strict=True)],
    }


# --- Latency percentiles --------------------------------------------------------------


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def latency(scope: DashboardScope) -> dict[str, Any]:
    """p50/p95/p99 per bucket and over the range, from the roll-ups' histograms merged
    element-wise (``apps.reports.histogram``): an estimate within one bucket (≈19 %)."""
    index = {b: i for i, b in enumerate(scope.buckets())}
    merged = [histogram_empty() for _ in index]
    rows = rollups_in(scope).order_by().values_list("hour", "latency_histogram")
    for hour, histogram in rows.iterator(chunk_size=2000):
        target = merged[index[scope.bucket_of(hour)]]
        for i, n in enumerate((histogram or [])[: len(target)]):
            target[i] += n  # in place: a month of rows is many histograms
    overall = histogram_merge(merged)
    return {
        "bucket": scope.bucket,
        "labels": scope.labels(),
        **{f"p{q}": [_ms(histogram_percentile(h, q / 100)) for h in merged] for q in (50, 95, 99)},
        "overall": {f"p{q}": _ms(histogram_percentile(overall, q / 100)) for q in (50, 95, 99)},
    }


# --- Budget burn-down -----------------------------------------------------------------


def _window_q(window: Window) -> Q:
    q = Q()
    if window.start is not None:
        q &= Q(hour__gte=window.start)
    if window.end is not None:
        q &= Q(hour__lt=window.end)
    return q


def budget_spend_current(budgets: list[Budget], now: datetime) -> list[tuple[Window, Decimal]]:
    """Each budget's current period and its spend there, from the roll-ups, summed with
    conditional aggregates (one query per ``BUDGETS_PER_QUERY`` budgets)."""
    pairs = [(b, period_window(b.period, now)) for b in budgets]
    spent: list[Decimal] = []
    for i in range(0, len(pairs), BUDGETS_PER_QUERY):
        part = pairs[i : i + BUDGETS_PER_QUERY]
        row = UsageRollup.objects.aggregate(
            **{
                f"b{j}": Sum("cost_usd", filter=budget_filter(b) & _window_q(w))
                for j, (b, w) in enumerate(part)
            }
        )
        spent += [row[f"b{j}"] or Decimal(0) for j in range(len(part))]
    return [(w, s) for (_, w), s in zip(pairs, spent, strict=True)]


def projected_spend(spent: Decimal, window: Window, now: datetime) -> Decimal | None:
    """Straight-line projection to the period's end: spend so far / time elapsed × period
    length. None for a ``total`` budget (no end) or a period that has not begun."""
    if window.start is None or window.end is None:
        return None
    elapsed = Decimal((now - window.start).total_seconds())
    length = Decimal((window.end - window.start).total_seconds())
    if elapsed <= 0:
        return None
    return spent * length / elapsed


def budget_burn(
    organization_id: int | None,
    now: datetime | None = None,
    limit: int = BUDGETS_LIMIT,
    area: Area | None = None,
) -> dict[str, Any]:
    """Every budget in scope (the ``limit`` most used are listed): spent against its limit
    in the current period, and the period's projected spend. Only budgets attached inside
    ``area``: a team's viewer does not see its organisation's budget (the whole
    organisation's spend)."""
    now = (now or timezone.now()).astimezone(UTC)
    in_scope = budgets_in_scope(None if organization_id is None else [organization_id])
    if area is not None:
        in_scope = in_scope.filter(budget_q(area))
    budgets = list(in_scope)
    items = []
    for budget, (window, spent) in zip(budgets, budget_spend_current(budgets, now), strict=True):
        projected = projected_spend(spent, window, now)
        limit_usd = budget.limit_usd
        items.append(
            {
                "budget_id": budget.pk,
                "label": budget.level + (f" · {budget.model.name}" if budget.model_id else ""),
                "organization": budget_organization(budget).name,
                "level": next(lv for lv in LEVELS if getattr(budget, f"{lv}_id")),
                "period": budget.period,
                "period_key": window.key,
                "period_start": window.start.isoformat() if window.start else None,
                "period_end": window.end.isoformat() if window.end else None,
                "limit_usd": money(limit_usd),
                "spent_usd": money(spent),
                "projected_usd": None if projected is None else money(projected),
                "percent_used": _percent_money(spent, limit_usd),
                "projected_percent": None
                if projected is None
                else _percent_money(projected, limit_usd),
                "hard": budget.hard,
            }
        )
    items.sort(key=lambda i: (-(i["percent_used"] or 0), i["budget_id"]))
    return {"count": len(items), "budgets": items[:limit], "as_of": now.isoformat()}


def _percent_money(part: Decimal, whole: Decimal) -> float | None:
    return round(float(part * 100 / whole), 2) if whole > 0 else None


# --- Guardrail findings ---------------------------------------------------------------


def findings_by_type(scope: DashboardScope, scan_limit: int = FINDINGS_SCAN_LIMIT) -> dict:
    """Requests with a finding, per detector, among the most recent ``scan_limit`` records
    of the range. Roll-ups carry no findings, so this is the one chart that reads the
    request log: bounded by the range and the limit, walking the ``created_at`` index."""
    recent = in_area(
        RequestLog.objects.filter(created_at__gte=scope.start, created_at__lt=scope.end),
        scope.area,
    )
    if scope.organization_id is not None:
        recent = recent.filter(organization_id=scope.organization_id)
    recent_ids = recent.order_by("-created_at", "-id").values("id")[:scan_limit]
    groups = (
        RequestLog.objects.filter(id__in=recent_ids)
        .values("finding_types")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, int] = defaultdict(int)
    scanned = 0
    for row in groups:
        scanned += row["n"]
        # One count per rule and request: old records name "secret.<kind>", new ones the rule.
        names = {rule_and_kind(n.strip())[0] for n in (row["finding_types"] or "").split(",")}
        for name in names - {""}:
            counts[name] += row["n"]
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "source": "request_log",
        "scanned": scanned,
        "scan_limit": scan_limit,
        "capped": scanned >= scan_limit,
        "types": [{"type": name, "requests": n} for name, n in ordered],
    }


# --- The live feed's first rows -------------------------------------------------------


def recent_records(
    organization_id: int | None, limit: int = RECENT_LIMIT, area: Area | None = None
) -> list[dict]:
    """The latest records (inside ``area``), shaped like the websocket's pushes: the live
    feed starts with them."""
    qs = RequestLog.objects.all() if area is None else in_area(RequestLog.objects.all(), area)
    if organization_id is not None:
        qs = qs.filter(organization_id=organization_id)
    rows = qs.order_by("-created_at", "-id").values(
        "request_id",
        "created_at",
        "organization_id",
        "team_id",
        "project_id",
        "key_prefix",
        "model_requested",
        "status_code",
        "latency_ms",
        "cost_usd",
    )[:limit]
    return [feed_item(r) for r in rows]
