"""``GET /api/v1/reports/spend``: the finance spend report as JSON, CSV or XLSX.

Mounted on the management API by ``apps.api.api`` with the same admin-token auth, for
tokens whose role reads spend (org admin, finance; not an auditor: 403). An
organisation's token always gets its own organisation (naming another is a 403); a
platform token gets every organisation, or the one ``org`` names. The report covers
whole organisations, so a team's token is refused (403) rather than shown a figure that
includes its sibling teams.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router

from apps.api.auth import AdminTokenAuth
from apps.api.models import AdminToken
from apps.api.schemas import ErrorOut, ValidationErrorOut, refuse_undocumented_query
from apps.api.scope import token_area
from apps.api.selectors import scope_resolve
from apps.identity.areas import whole_organizations
from apps.identity.roles import Capability
from apps.identity.scope import Area
from apps.reports.exports import CONTENT_TYPES, report_file, report_json
from apps.reports.schemas import SpendReportOut, SpendReportQuery
from apps.reports.selectors import spend_report_build, spend_report_spec
from apps.tenancy.models import Organization

router = Router(auth=AdminTokenAuth(), tags=["reports"])


# The 200 answer is JSON, or a file with format=csv|xlsx.
FILES = {
    CONTENT_TYPES[fmt].split(";")[0]: {"schema": {"type": "string"}} for fmt in ("csv", "xlsx")
}


def spend_report_organizations(area: Area, organization: Organization | None) -> list[int] | None:
    """The organisations a spend report for this area covers (None: all, the platform's);
    PermissionDenied when the area holds no whole organisation (a team's finance or team
    admin: the report's figures are organisation-wide)."""
    ids = whole_organizations(area, None if organization is None else [organization.pk])
    if ids is not None and not ids:
        raise PermissionDenied("the spend report covers whole organisations: ask for it at one")
    return ids


@router.get(
    "/spend",
    response={
        200: SpendReportOut,
        401: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        422: ValidationErrorOut,
    },
    openapi_extra={"responses": {200: {"content": FILES}}},
    summary="Spend report (JSON, or a CSV / XLSX download)",
)
def reports_spend(request: HttpRequest, filters: Query[SpendReportQuery]) -> Any:
    """Requests, tokens and cost per period and grouping, with totals and budget vs
    actual, from the hourly roll-ups. Its totals equal the request log's for the range."""
    refuse_undocumented_query(request, SpendReportQuery)
    token: AdminToken = request.auth  # type: ignore[attr-defined]
    organization_ids = spend_report_organizations(
        token_area(token, Capability.SPEND),
        scope_resolve(token=token, org=filters.org, capability=Capability.SPEND).organization,
    )
    spec = spend_report_spec(
        start=filters.start,
        end=filters.end,
        group_by=filters.group_by,
        granularity=filters.granularity,
        organization_ids=organization_ids,
    )
    report = spend_report_build(spec)
    if filters.format == "json":
        return report_json(report)
    file = report_file(report, filters.format)
    response = HttpResponse(file.content, content_type=file.content_type)
    response["Content-Disposition"] = f'attachment; filename="{file.filename}"'
    response["Cache-Control"] = "no-store"
    return response
