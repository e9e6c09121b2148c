"""``GET /api/v1/reports/spend``: the finance spend report as JSON, CSV or XLSX.

Mounted on the management API by ``apps.api.api`` with the same admin-token auth. An
organisation's token always gets its own organisation (naming another is a 403); a
platform token gets every organisation, or the one ``org`` names.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router

from apps.api.auth import AdminTokenAuth
from apps.api.models import AdminToken
from apps.api.schemas import ErrorOut, ValidationErrorOut, refuse_undocumented_query
from apps.api.selectors import scope_resolve
from apps.reports.exports import CONTENT_TYPES, report_file, report_json
from apps.reports.schemas import SpendReportOut, SpendReportQuery
from apps.reports.selectors import spend_report_build, spend_report_spec

router = Router(auth=AdminTokenAuth(), tags=["reports"])


# The 200 answer is JSON, or a file with format=csv|xlsx.
FILES = {
    CONTENT_TYPES[fmt].split(";")[0]: {"schema": {"type": "string"}} for fmt in ("csv", "xlsx")
}


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
    scope = scope_resolve(token=token, org=filters.org)
    spec = spend_report_spec(
        start=filters.start,
        end=filters.end,
        group_by=filters.group_by,
        granularity=filters.granularity,
        organization_ids=None if scope.organization is None else [scope.organization.pk],
    )
    report = spend_report_build(spec)
    if filters.format == "json":
        return report_json(report)
    file = report_file(report, filters.format)
    response = HttpResponse(file.content, content_type=file.content_type)
    response["Content-Disposition"] = f'attachment; filename="{file.filename}"'
    response["Cache-Control"] = "no-store"
    return response
