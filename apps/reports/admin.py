"""Admin of the reports app: the spend report page (form, preview, CSV/XLSX download),
monthly report schedules with their deliveries, and read-only usage roll-ups.

The spend report appears on the admin index as "Spend reports" (a proxy of the roll-ups
it reads). Everything here needs the spend capability, and shows only the organisations
it covers.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import PAGE_VAR
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from apps.audit.admin import LargeTablePaginator
from apps.core.money import usd_display
from apps.identity.admin_scope import (
    ORGANIZATION_ID_PATHS,
    RECORD_PATHS,
    ScopedAdminMixin,
    ScopedInlineMixin,
)
from apps.identity.roles import Capability
from apps.reports.delivery import previous_month
from apps.reports.exports import (
    GROUP_HEADERS,
    report_about,
    report_file,
    report_headers,
)
from apps.reports.forms import ReportScheduleForm, SpendReportForm
from apps.reports.models import ReportDelivery, ReportSchedule, SpendReport, UsageRollup
from apps.reports.selectors import FIGURES, SpendReportData, spend_report_build
from apps.tenancy.models import Organization

PREVIEW_ROWS = 500


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RollupPaginatorMixin:
    """Roll-ups grow by an hour's worth of rows every hour: never COUNT them."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_max_show_all = 0

    def get_paginator(
        self, request: HttpRequest, queryset: QuerySet, per_page: int, *args: Any, **kwargs: Any
    ) -> Paginator:
        try:
            page_number = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            page_number = 1
        return LargeTablePaginator(queryset, per_page, page_number=page_number)


@admin.register(UsageRollup)
class UsageRollupAdmin(
    RollupPaginatorMixin, ReadOnlyAdminMixin, ScopedAdminMixin, admin.ModelAdmin
):
    scope_paths = RECORD_PATHS
    view_capability = Capability.SPEND
    read_only = True
    list_display = (
        "hour",
        "organization",
        "team",
        "project",
        "key",
        "model_requested",
        "provider",
        "requests",
        "errors",
        "refusals",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    )
    list_filter = ("organization", ("hour", admin.DateFieldListFilter))
    list_select_related = ("organization", "team__organization", "project__team", "key")
    search_fields = ("model_requested",)  # shows the box; see get_search_results
    search_help_text = "An exact model or provider name."
    sortable_by = ("hour",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(model_requested=term) | Q(provider=term)), False


@admin.register(SpendReport)
class SpendReportAdmin(ReadOnlyAdminMixin, ScopedAdminMixin, admin.ModelAdmin):
    """The list page is the report form: pick organisation, days, grouping, granularity
    and format; "show here" previews, CSV and XLSX download.

    A report is built per organisation, so it needs the spend capability at the
    organisation level: the organisation choices are those, and "all organisations"
    means all of those. Team-level finance reads its team's usage roll-ups instead."""

    scope_paths = ORGANIZATION_ID_PATHS
    view_capability = Capability.SPEND
    read_only = True

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = SpendReportForm(request.GET if "start" in request.GET else None)
        area = self.scope_area(request)
        if not area.everything:
            form.fields["organization"].queryset = Organization.objects.filter(
                pk__in=area.org_ids
            ).order_by("name")
        report: SpendReportData | None = None
        if form.is_bound and form.is_valid() and form.spec is not None:
            spec = form.spec
            if not area.everything and spec.organization_ids is None:
                spec = dataclasses.replace(spec, organization_ids=tuple(sorted(area.org_ids)))
            report = spend_report_build(spec)
            fmt = form.cleaned_data["format"]
            if fmt in ("csv", "xlsx"):
                file = report_file(report, fmt)
                response = HttpResponse(file.content, content_type=file.content_type)
                response["Content-Disposition"] = f'attachment; filename="{file.filename}"'
                response["Cache-Control"] = "no-store"
                return response
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Spend report",
            "form": form,
            "report": report,
            **(_preview(report) if report is not None else {}),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "reports/spend_report.html", context)


def _preview(report: SpendReportData) -> dict[str, Any]:
    """Plain lists for the template: headers, the first rows, totals and budgets."""
    rows = [
        [r.period, *(r.groups[g] for g in report.spec.group_by)]
        + [getattr(r.figures, f) for f in FIGURES]
        + [usd_display(r.figures.cost_usd)]
        for r in report.rows[:PREVIEW_ROWS]
    ]
    totals = (
        ["Total", *("" for _ in report.spec.group_by)]
        + [getattr(report.totals, f) for f in FIGURES]
        + [usd_display(report.totals.cost_usd)]
    )
    return {
        "headers": report_headers(report),
        "rows": rows,
        "rows_total": len(report.rows),
        "rows_cut": len(report.rows) > PREVIEW_ROWS,
        "totals": totals,
        "about": report_about(report),
        "group_headers": [GROUP_HEADERS[g] for g in report.spec.group_by],
    }


class ReportDeliveryInline(ScopedInlineMixin, admin.TabularInline):
    model = ReportDelivery
    fields = ("period", "delivered_at", "emailed", "webhook_status", "error", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-period",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ReportSchedule)
class ReportScheduleAdmin(ScopedAdminMixin, admin.ModelAdmin):
    # Finance and org admins schedule their organisations' monthly reports.
    scope_paths = ORGANIZATION_ID_PATHS
    view_capability = Capability.SPEND
    write_capability = Capability.SPEND
    form = ReportScheduleForm
    list_display = (
        "organization",
        "emails",
        "webhook_url",
        "group_by",
        "granularity",
        "format",
        "is_active",
        "last_sent_period",
    )
    list_filter = ("is_active", "format")
    list_select_related = ("organization",)
    search_fields = ("organization__name", "emails")
    autocomplete_fields = ("organization",)
    readonly_fields = ("last_sent_period", "created_at")
    inlines = (ReportDeliveryInline,)
    actions = ("send_previous_month",)

    @admin.action(description="Send last month's report now (once per month)")
    def send_previous_month(self, request: HttpRequest, queryset: QuerySet) -> None:
        from apps.reports.tasks import report_schedule_send

        period = previous_month(timezone.now())
        ids = list(queryset.values_list("pk", flat=True))
        for schedule_id in ids:
            transaction.on_commit(partial(report_schedule_send.delay, schedule_id, period))
        self.message_user(
            request,
            f"Queued {len(ids)} report(s) for {period}; a month already delivered is not "
            "sent again.",
            messages.SUCCESS,
        )
