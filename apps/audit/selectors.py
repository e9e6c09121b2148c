"""Reads of the request log: the one filter language shared by the admin, the management API
and exports, and keyset iteration over a filtered set.

Everything here is built for a table of many millions of rows:

- names (organisation, team, project, key) are resolved to ids on the small tenancy and
  key tables first, so the log itself is only ever filtered by indexed id columns;
- results are ordered by ``(created_at desc, id desc)``, the order of the
  ``(-created_at, -id)`` index, and paged by position (keyset), never by OFFSET or COUNT;
- the admin asks for a default time window so an unfiltered page, or a filter on a column
  without an index (provider, error code, finding, cost), never walks the whole table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from apps.audit.models import RequestLog
from apps.guardrails.detectors import kind_prefix, rule_and_kind
from apps.identity.scope import Area
from apps.keys.models import VirtualKey
from apps.keys.secrets import KEY_PREFIX
from apps.tenancy.models import Organization, Project, Team

# Query-string names, in the order forms show them. ``from`` / ``to`` are the time range.
FILTER_PARAMS = (
    "from",
    "to",
    "org",
    "team",
    "project",
    "key",
    "model",
    "provider",
    "status",
    "error_code",
    "finding",
    "cost_min",
    "cost_max",
    "endpoint",
    "stream",
)
STATUS_CLASSES = {f"{n}xx": (n * 100, n * 100 + 100) for n in range(1, 6)}
DEFAULT_WINDOW = timedelta(hours=24)
ORDERING = ("-created_at", "-id")

_RELATIVE = re.compile(r"^(\d{1,6})\s*(m|min|h|d|w)$")
_RELATIVE_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FINDING = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_STATUS_CODE = re.compile(r"^[1-5]\d\d$")
_MAX_TEXT = 300  # the longest indexed text column is 300 characters


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """A parsed, validated filter. ``None`` means "not filtered on"; ``created_from`` is
    inclusive and ``created_to`` exclusive. Organisation, team, project and key are given
    as an id (digits) or a name; a key also by its visible prefix (``sk-odock-…``)."""

    created_from: datetime | None = None
    created_to: datetime | None = None
    org: str | None = None
    team: str | None = None
    project: str | None = None
    key: str | None = None
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    error_code: str | None = None
    finding: str | None = None
    cost_min: Decimal | None = None
    cost_max: Decimal | None = None
    endpoint: str | None = None
    stream: bool | None = None

    def is_empty_range(self) -> bool:
        """``from`` not before ``to``, or ``cost_min`` above ``cost_max``: nothing matches."""
        times = self.created_from, self.created_to
        costs = self.cost_min, self.cost_max
        return (None not in times and times[0] >= times[1]) or (
            None not in costs and costs[0] > costs[1]
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_instant(value: str, *, now: datetime, end_of_day: bool = False) -> datetime:
    """An ISO 8601 datetime (naive means UTC), a date (its midnight, or the next one with
    ``end_of_day`` so ``to=2026-01-31`` includes that day), or a duration before ``now``:
    ``30m``, ``6h``, ``7d``, ``2w``. Raises ValueError otherwise."""
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), _RELATIVE_UNITS[relative.group(2)]
        return _clamped(lambda: now - timedelta(**{unit: amount}), EARLIEST)
    if _DATE.match(value):
        day = parse_date(value)
        if day is not None:
            start = datetime.combine(day, time.min, tzinfo=UTC)
            return _clamped(lambda: start + timedelta(days=1), LATEST) if end_of_day else start
    # An unescaped "+" in a query string arrives as a space: "10:00:00 00:00".
    repaired = re.sub(r"(\d) (\d\d:?\d\d)$", r"\1+\2", value)
    moment = parse_datetime(repaired)
    if moment is not None:
        if timezone.is_naive(moment):
            return moment.replace(tzinfo=UTC)
        # 0001-01-01T00:00+01:00 is before the first moment Python holds in UTC.
        return _clamped(lambda: moment.astimezone(UTC), EARLIEST if moment.year == 1 else LATEST)
    raise ValueError(value)


EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def _clamped(compute: Callable[[], datetime], bound: datetime) -> datetime:
    """``compute()``, or ``bound`` when the result is beyond the years Python holds (a
    duration of 999999 weeks, the day after 9999-12-31): such a range reaches the end."""
    try:
        return compute()
    except OverflowError:
        return bound


def _decimal(value: Any) -> Decimal:
    number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    if not number.is_finite() or number < 0:
        raise InvalidOperation
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(value)


def audit_filter_parse(
    params: Mapping[str, Any],
    *,
    default_window: timedelta | None = None,
    now: datetime | None = None,
) -> AuditFilter:
    """Parse query-string values (strings, or already-typed values from the API's schema).

    Empty values count as absent. With ``default_window``, a missing ``from`` becomes that
    long before ``to`` (or now): the admin's guard against unbounded scans. Every invalid
    value is reported at once, as a ValidationError keyed by parameter name. An empty
    range (``from`` not before ``to``, ``cost_min`` above ``cost_max``) is valid and
    matches nothing, like any other filter no record meets.
    """
    now = now or timezone.now()
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    def get(name: str) -> Any:
        value = params.get(name)
        return value if isinstance(value, bool | Decimal | datetime) else _text(value)

    for name, end_of_day in (("from", False), ("to", True)):
        raw = get(name)
        if isinstance(raw, datetime):
            values[name] = raw if timezone.is_aware(raw) else raw.replace(tzinfo=UTC)
        elif raw is not None:
            try:
                values[name] = parse_instant(raw, now=now, end_of_day=end_of_day)
            except ValueError:
                errors[name] = "give an ISO 8601 date or time, or a duration such as 24h or 7d"

    for name in ("org", "team", "project", "key", "model", "provider", "error_code", "endpoint"):
        raw = get(name)
        if raw is not None:
            if len(raw) > _MAX_TEXT:
                errors[name] = f"at most {_MAX_TEXT} characters"
            else:
                values[name] = raw

    status = get("status")
    if status is not None:
        status = status.lower()
        if status in STATUS_CLASSES or _STATUS_CODE.match(status):
            values["status"] = status
        else:
            errors["status"] = "give a class (2xx, 4xx, 5xx) or a code (429)"

    finding = get("finding")
    if finding is not None:
        if _FINDING.match(finding):
            values["finding"] = finding
        else:
            errors["finding"] = "give one detector name (letters, digits, _ . : -)"

    for name in ("cost_min", "cost_max"):
        raw = get(name)
        if raw is not None:
            try:
                values[name] = _decimal(raw)
            except (InvalidOperation, ValueError):
                errors[name] = "give a non-negative amount in USD, e.g. 0.25"

    stream = get("stream")
    if stream is not None:
        try:
            values["stream"] = _bool(stream)
        except ValueError:
            errors["stream"] = "give true or false"

    if "from" not in values and default_window is not None and "from" not in errors:
        end = values.get("to", now)
        values["from"] = _clamped(lambda: end - default_window, EARLIEST)
    if errors:
        raise ValidationError(errors)
    return AuditFilter(
        created_from=values.pop("from", None),
        created_to=values.pop("to", None),
        **values,
    )


# --- resolving names on the small tables -------------------------------------------------


def _id_or(value: str, **by_name: str) -> Q:
    """Digits are an id (up to a bigint's 18 safe digits); anything else is a name."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return Q(pk=int(value))
    return Q(**by_name)


def _ids(qs: QuerySet) -> list[int]:
    return list(qs.values_list("pk", flat=True))


@dataclass(frozen=True, slots=True)
class _Resolved:
    org_ids: list[int] | None = None
    team_ids: list[int] | None = None
    project_ids: list[int] | None = None
    key_ids: list[int] | None = None

    def matches_nothing(self) -> bool:
        return any(
            ids == [] for ids in (self.org_ids, self.team_ids, self.project_ids, self.key_ids)
        )


def _resolve(filters: AuditFilter, scope_org_ids: list[int] | None) -> _Resolved:
    """One small query per named level. A name is looked up under the levels named above it
    (team names are unique per organisation only), and never outside the caller's
    organisations (``scope_org_ids``; None: all)."""
    org_ids = team_ids = project_ids = key_ids = None
    if filters.org is not None:
        org_ids = _ids(Organization.objects.filter(_id_or(filters.org, name=filters.org)))
        if scope_org_ids is not None and not (org_ids and set(org_ids) <= set(scope_org_ids)):
            raise PermissionDenied("this organisation is outside what you may see")
    within_orgs = org_ids if org_ids is not None else scope_org_ids
    if filters.team is not None:
        teams = Team.objects.filter(_id_or(filters.team, name=filters.team))
        if within_orgs is not None:
            teams = teams.filter(organization_id__in=within_orgs)
        team_ids = _ids(teams)
    if filters.project is not None:
        projects = Project.objects.filter(_id_or(filters.project, name=filters.project))
        if team_ids is not None:
            projects = projects.filter(team_id__in=team_ids)
        elif within_orgs is not None:
            projects = projects.filter(team__organization_id__in=within_orgs)
        project_ids = _ids(projects)
    if filters.key is not None:
        value = filters.key
        match = (
            Q(prefix__startswith=value)
            if value.startswith(KEY_PREFIX)
            else _id_or(value, name=value)
        )
        keys = VirtualKey.objects.filter(match)
        if project_ids is not None:
            keys = keys.filter(project_id__in=project_ids)
        elif team_ids is not None:
            keys = keys.filter(project__team_id__in=team_ids)
        elif within_orgs is not None:
            keys = keys.filter(project__team__organization_id__in=within_orgs)
        key_ids = _ids(keys)
    return _Resolved(org_ids, team_ids, project_ids, key_ids)


def _finding_name_q(name: str) -> Q:
    """``finding_types`` holds sorted detector names joined by commas: match a whole name,
    so ``pii`` does not match ``pii_email``."""
    return (
        Q(finding_types=name)
        | Q(finding_types__startswith=f"{name},")
        | Q(finding_types__endswith=f",{name}")
        | Q(finding_types__contains=f",{name},")
    )


def finding_q(detector: str) -> Q:
    """Records with a finding of the rule ``detector`` (``secrets``), or of one sub-kind
    (``secrets:aws_access_key``, or the old spelling ``secret.aws_access_key``). Findings are
    recorded under the rule's name with the sub-kind beside it; records written before that
    named the finding ``secret.<kind>``, and the rule's name still finds them."""
    rule, kind = rule_and_kind(detector)
    if kind is None and ":" in detector:
        rule, kind = detector.split(":", 1)
    prefix = kind_prefix(rule)
    if kind is None:
        q = _finding_name_q(rule)
        if prefix is not None:  # old records: "secret.aws_access_key,email"
            q |= Q(finding_types__startswith=prefix) | Q(finding_types__contains=f",{prefix}")
        return q
    q = _finding_name_q(rule) & Q(findings__contains=[{"detector": rule, "kind": kind}])
    if prefix is not None:
        q |= _finding_name_q(f"{prefix}{kind}")
    return q


def status_q(status: str) -> Q:
    if status in STATUS_CLASSES:
        low, high = STATUS_CLASSES[status]
        return Q(status_code__gte=low, status_code__lt=high)
    return Q(status_code=int(status))


def request_log_search(
    *,
    filters: AuditFilter,
    organization_id: int | None = None,
    area: Area | None = None,
    queryset: QuerySet[RequestLog] | None = None,
) -> QuerySet[RequestLog]:
    """The records matching ``filters``, newest first (the ``(-created_at, -id)`` index).

    ``area`` is the caller's audit area (``scope.area(Capability.AUDIT)`` of a person or a
    token; ``organization_id``: one organisation's): every row is limited to it, and
    naming an organisation outside it raises PermissionDenied rather than quietly widening
    or emptying the result. A team, project or key outside it matches nothing. Names that
    match nothing give an empty queryset without touching the log.
    """
    qs = queryset if queryset is not None else RequestLog.objects.all()
    area = _area(area, organization_id)
    scope_org_ids = None if area is None or area.everything else _ids(area.organizations())
    resolved = _resolve(filters, scope_org_ids)
    if filters.is_empty_range() or resolved.matches_nothing():
        return qs.none()
    if area is not None:
        qs = area.filter(qs, org="organization_id", team="team_id", project="project_id")
    for column, ids in (
        ("organization_id", resolved.org_ids),
        ("team_id", resolved.team_ids),
        ("project_id", resolved.project_ids),
        ("key_id", resolved.key_ids),
    ):
        if ids is not None:
            qs = qs.filter(**{f"{column}__in": ids})
    if filters.created_from is not None:
        qs = qs.filter(created_at__gte=filters.created_from)
    if filters.created_to is not None:
        qs = qs.filter(created_at__lt=filters.created_to)
    exact = {
        "model_requested": filters.model,
        "provider": filters.provider,
        "error_code": filters.error_code,
        "endpoint": filters.endpoint,
        "stream": filters.stream,
    }
    qs = qs.filter(**{column: value for column, value in exact.items() if value is not None})
    if filters.status is not None:
        qs = qs.filter(status_q(filters.status))
    if filters.finding is not None:
        qs = qs.filter(finding_q(filters.finding))
    if filters.cost_min is not None:
        qs = qs.filter(cost_usd__gte=filters.cost_min)
    if filters.cost_max is not None:
        qs = qs.filter(cost_usd__lte=filters.cost_max)
    return qs.order_by(*ORDERING)


def _area(area: Area | None, organization_id: int | None) -> Area | None:
    if area is None and organization_id is not None:
        return Area(org_ids=frozenset({organization_id}))
    return area


def request_log_get(
    *, request_id: str, organization_id: int | None = None, area: Area | None = None
) -> RequestLog:
    """One record by request id (unique index); Http404 whether it does not exist or is
    outside the caller's area, so ids leak nothing."""
    qs = RequestLog.objects.filter(request_id=request_id)
    area = _area(area, organization_id)
    if area is not None:
        qs = area.filter(qs, org="organization_id", team="team_id", project="project_id")
    record = qs.first()
    if record is None:
        raise Http404("record not found")
    return record


# --- keyset pagination ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last row's ``(created_at, id)``. Rows sharing a timestamp are
    ordered by id, so a position is exact even when many rows have the same time."""

    created_at: datetime
    id: int


def after_position(qs: QuerySet[RequestLog], position: Position | None) -> QuerySet[RequestLog]:
    """Rows after ``position`` in ``(created_at desc, id desc)`` order. The redundant
    ``created_at <= t`` is what lets the database start the index scan there."""
    if position is None:
        return qs
    return qs.filter(created_at__lte=position.created_at).filter(
        Q(created_at__lt=position.created_at) | Q(id__lt=position.id)
    )


def request_log_page(
    qs: QuerySet[RequestLog], *, after: Position | None, limit: int
) -> tuple[list[RequestLog], Position | None]:
    """One page of ``qs`` and the position to continue from (None on the last page).

    Reads ``limit + 1`` rows to learn whether more follow: no COUNT, no OFFSET, and the
    same cost for the last page as for the first."""
    rows = list(after_position(qs.order_by(*ORDERING), after)[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, Position(rows[-1].created_at, rows[-1].pk)


def request_log_chunks(
    qs: QuerySet[RequestLog], *, columns: Sequence[str], chunk_size: int = 1000
) -> Iterator[list[tuple[Any, ...]]]:
    """``qs`` as lists of value tuples (``columns``), ``chunk_size`` rows per query.

    Each chunk is its own short keyset query, so memory stays constant on both sides and
    no transaction or cursor is held open between chunks (a streamed export may take
    minutes, and Django's ASGI handler may resume it on another thread)."""
    cols = list(columns)
    for needed in ("created_at", "id"):
        if needed not in cols:
            cols.append(needed)
    at, pk = cols.index("created_at"), cols.index("id")
    width = len(columns)
    ordered = qs.order_by(*ORDERING)
    position: Position | None = None
    while True:
        rows = list(after_position(ordered, position).values_list(*cols)[:chunk_size])
        if not rows:
            return
        yield [row[:width] for row in rows] if len(cols) > width else rows
        if len(rows) < chunk_size:
            return
        position = Position(rows[-1][at], rows[-1][pk])
