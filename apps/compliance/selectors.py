"""Reads behind an evidence pack: one organisation's request log and change trail for a
period, aggregated in the database (a period can hold millions of records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Case, Count, F, Q, QuerySet, Sum, When

from apps.audit.models import RequestLog
from apps.compliance.models import ConfigChange, EvidencePack
from apps.guardrails.detectors import rule_and_kind
from apps.identity.scope import Area
from apps.keys.models import VirtualKey

REFUSED = Q(status_code__gte=400)
TOOL_ENDPOINT_PREFIX = "mcp"


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """UTC instants of a period of whole days: [start 00:00, the day after end 00:00)."""
    since = datetime.combine(start, time.min, tzinfo=UTC)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    return since, until


def records_in_period(organization_id: int, start: date, end: date) -> QuerySet[RequestLog]:
    """Served by the (organization, -created_at) index."""
    since, until = period_bounds(start, end)
    return RequestLog.objects.filter(
        organization_id=organization_id, created_at__gte=since, created_at__lt=until
    )


def changes_in_period(organization_id: int, start: date, end: date) -> QuerySet[ConfigChange]:
    """The organisation's own changes and the platform-wide ones (providers, models,
    deployments) that apply to it too, oldest first."""
    since, until = period_bounds(start, end)
    return ConfigChange.objects.filter(
        Q(organization_id=organization_id) | Q(organization_id__isnull=True),
        created_at__gte=since,
        created_at__lt=until,
    ).order_by("created_at", "id")


def changes_visible(area: Area) -> QuerySet[ConfigChange]:
    """The change trail a person or token with this audit area may read: changes to
    objects inside it (a team's auditor: its team, projects and keys). Platform-wide
    changes (providers, models, platform tokens) only for the platform."""
    return area.filter(
        ConfigChange.objects.all(), org="organization_id", team="team_id", project="project_id"
    )


def evidence_packs_visible(area: Area) -> QuerySet[EvidencePack]:
    """Packs a person or token with this audit area may list, read and download. A pack
    is a whole organisation's evidence (its request log and change trail), so only an
    organisation-wide audit area covers it; a team's auditor sees none. The admin's
    evidence pack pages filter with this too."""
    qs = EvidencePack.objects.select_related("organization", "requested_by")
    if area.everything:
        return qs
    return qs.filter(organization_id__in=area.org_ids)


def evidence_pack_may_request(area: Area, organization_id: int) -> bool:
    """Whether this audit area may ask for a pack of the organisation (the same rule)."""
    return area.everything or organization_id in area.org_ids


@dataclass(frozen=True, slots=True)
class UsageRow:
    who: str  # the key (name and prefix) and its owner, when it has one
    target: str  # model served (or asked for), or tool
    requests: int
    refused: int
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class ReasonRow:
    status_code: int
    error_code: str
    count: int


@dataclass
class PeriodEvidence:
    requests: int = 0
    refused: int = 0
    cost_usd: Decimal = Decimal(0)
    models: list[UsageRow] = field(default_factory=list)
    tools: list[UsageRow] = field(default_factory=list)
    refusals: list[ReasonRow] = field(default_factory=list)
    findings: list[tuple[str, int]] = field(default_factory=list)


def _who(key_names: dict[int, str], users: dict[int, str], row: dict) -> str:
    key = key_names.get(row["key_id"]) if row["key_id"] is not None else None
    if key is None:
        key = f"key {row['key_prefix']}…" if row["key_prefix"] else "no key"
    user_id = row["user_id"]
    if user_id is None:
        return key
    return f"{key} / user {users.get(user_id, f'#{user_id}')}"


def _usage(qs: QuerySet[RequestLog], target: Case | F) -> list[dict]:
    return list(
        qs.annotate(target=target)
        .values("key_id", "key_prefix", "user_id", "target")
        .annotate(requests=Count("id"), refused=Count("id", filter=REFUSED), cost=Sum("cost_usd"))
        .order_by("key_id", "key_prefix", "user_id", "target")
    )


def period_evidence(organization_id: int, start: date, end: date) -> PeriodEvidence:
    """Who used which models and tools, refusals by reason, guardrail findings by type."""
    records = records_in_period(organization_id, start, end)
    totals = records.aggregate(
        requests=Count("id"), refused=Count("id", filter=REFUSED), cost=Sum("cost_usd")
    )
    evidence = PeriodEvidence(
        requests=totals["requests"],
        refused=totals["refused"],
        cost_usd=totals["cost"] or Decimal(0),
    )
    tool_calls = Q(endpoint__startswith=TOOL_ENDPOINT_PREFIX)
    model_rows = _usage(
        records.exclude(tool_calls),
        Case(When(model_served="", then=F("model_requested")), default=F("model_served")),
    )
    tool_rows = _usage(records.filter(tool_calls), F("model_requested"))
    key_ids = {r["key_id"] for r in model_rows + tool_rows if r["key_id"] is not None}
    user_ids = {r["user_id"] for r in model_rows + tool_rows if r["user_id"] is not None}
    key_names = {
        pk: f"{name} ({prefix}…)"
        for pk, name, prefix in VirtualKey.objects.filter(pk__in=key_ids).values_list(
            "pk", "name", "prefix"
        )
    }
    users = dict(
        get_user_model()
        .objects.filter(pk__in=user_ids)
        .values_list("pk", get_user_model().USERNAME_FIELD)
    )
    for rows, out in ((model_rows, evidence.models), (tool_rows, evidence.tools)):
        out.extend(
            UsageRow(
                who=_who(key_names, users, r),
                target=r["target"] or "(none)",
                requests=r["requests"],
                refused=r["refused"],
                cost_usd=r["cost"] or Decimal(0),
            )
            for r in rows
        )
    evidence.refusals = [
        ReasonRow(r["status_code"], r["error_code"], r["n"])
        for r in records.filter(REFUSED)
        .values("status_code", "error_code")
        .annotate(n=Count("id"))
        .order_by("-n", "status_code", "error_code")
    ]
    by_type: dict[str, int] = {}
    for types, n in (
        records.exclude(finding_types="")
        .values("finding_types")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("finding_types", "n")
    ):
        # Old records name "secret.<kind>", new ones the rule ("secrets"): one row per rule.
        for name in {rule_and_kind(t.strip())[0] for t in types.split(",") if t.strip()}:
            by_type[name] = by_type.get(name, 0) + n
    evidence.findings = sorted(by_type.items(), key=lambda item: (-item[1], item[0]))
    return evidence
