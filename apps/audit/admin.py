"""Read-only admin for the request log, built for a table of many millions of rows.

No ``COUNT(*)`` ever (the paginator only looks one row past the page shown), no facet
counts, no date hierarchy (it would run DISTINCT over dates), filters with fixed choices
instead of ones that scan the table for their values, and sorting by time only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from apps.audit.models import RequestLog
from apps.keys.models import VirtualKey
from apps.keys.secrets import KEY_PREFIX

# The proxy's pipeline names (apps.gateway.app); fixed, so the filter never scans the table.
ENDPOINTS = ("chat.completions", "embeddings", "models", "messages", "mcp")


class LargeTablePaginator(Paginator):
    """Counts only up to one row past the requested page: enough for the admin to know
    whether a next page exists, without a COUNT over the whole (filtered) table."""

    def __init__(self, object_list: QuerySet, per_page: int, *, page_number: int = 1) -> None:
        super().__init__(object_list, per_page)
        self.page_number = max(page_number, 1)

    @cached_property
    def count(self) -> int:
        offset = (self.page_number - 1) * self.per_page
        window = self.object_list.values_list("pk", flat=True)[offset : offset + self.per_page + 1]
        return offset + len(window)


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"
    ranges = {
        "2xx": (200, 300),
        "4xx": (400, 500),
        "401": (401, 402),
        "403": (403, 404),
        "429": (429, 430),
        "5xx": (500, 600),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in self.ranges]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in self.ranges:
            low, high = self.ranges[self.value()]
            return queryset.filter(status_code__gte=low, status_code__lt=high)
        return queryset


class EndpointFilter(admin.SimpleListFilter):
    title = "endpoint"
    parameter_name = "endpoint"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in ENDPOINTS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(endpoint=self.value()) if self.value() else queryset


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "request_id",
        "endpoint",
        "model_requested",
        "status_code",
        "organization",
        "team",
        "project",
        "key",
        "cost_usd",
        "latency_ms",
        "stream",
    )
    list_filter = (
        StatusFilter,
        EndpointFilter,
        "stream",
        "organization",
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = (
        "organization",
        "team__organization",
        "project__team__organization",
        "key",
    )
    search_fields = ("request_id",)  # shows the box; see get_search_results
    search_help_text = "An exact request id, or a key prefix (sk-odock-…)."
    sortable_by = ("created_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_max_show_all = 0  # "show all" would load the whole table

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Index-friendly search only: an exact request id (unique index), or a key prefix
        resolved on the small keys table so the (key, created_at) index serves the rows."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.startswith(KEY_PREFIX):
            keys = VirtualKey.objects.filter(prefix__startswith=term).values("pk")
            return queryset.filter(key_id__in=keys), False
        return queryset.filter(request_id=term), False

    def get_paginator(
        self, request: HttpRequest, queryset: QuerySet, per_page: int, *args: Any, **kwargs: Any
    ) -> Paginator:
        try:
            page_number = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            page_number = 1
        return LargeTablePaginator(queryset, per_page, page_number=page_number)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RequestLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RequestLog | None = None) -> bool:
        return False
