"""Read-only admin for the request log, built for a table of many millions of rows.

No ``COUNT(*)`` ever (the paginator only looks one row past the page shown), no facet
counts, no date hierarchy (it would run DISTINCT over dates), no filter that scans the log
for its choices, and sorting by time only. Filtering goes through
``apps.audit.selectors`` — the same code as the API and exports — and a page without a
``from`` shows the last 24 hours, so no page walks the whole table.

The filter inputs and the export links sit in the search form's help area: the stock
``search_form.html`` renders ``search_help_text`` inside the search ``<form>``, so the
inputs submit with it and the admin needs no template override of its own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import PAGE_VAR, SEARCH_VAR, ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.audit import export
from apps.audit.models import AuditCheckpoint, AuditPurge, RequestLog
from apps.audit.selectors import (
    DEFAULT_WINDOW,
    FILTER_PARAMS,
    AuditFilter,
    audit_filter_parse,
    request_log_search,
)
from apps.core.admin import ellipsis, ms_text, usd_text
from apps.identity.admin_scope import ORGANIZATION_ID_PATHS, RECORD_PATHS, ScopedAdminMixin
from apps.identity.roles import Capability
from apps.keys.models import VirtualKey
from apps.keys.secrets import KEY_PREFIX

# The proxy's pipeline names (apps.gateway.app); fixed, so the filter never scans the table.
ENDPOINTS = ("chat.completions", "embeddings", "models", "messages", "mcp")

# The text inputs of the filter form: parameter, label, size, placeholder.
INPUTS = (
    ("from", "From", 16, "ISO time or 7d"),
    ("to", "To", 16, "ISO time or 1h"),
    ("org", "Org", 10, "id or name"),
    ("team", "Team", 10, "id or name"),
    ("project", "Project", 10, "id or name"),
    ("key", "Key", 14, "id, name, sk-odock-…"),
    ("model", "Model", 12, "model asked for"),
    ("provider", "Provider", 10, ""),
    ("status", "Status", 5, "5xx or 429"),
    ("error_code", "Error code", 12, ""),
    ("finding", "Finding", 10, "detector"),
    ("cost_min", "Cost ≥", 7, "USD"),
    ("cost_max", "Cost ≤", 7, "USD"),
)
INPUT_PARAMS = tuple(name for name, *_ in INPUTS)
LABELS = {**{name: label for name, label, *_ in INPUTS}, "endpoint": "Endpoint", "stream": "Stream"}
SEARCH_HELP = "Search: an exact request id (any time), or a key prefix (sk-odock-…)."
WINDOW_HELP = "Without From, the last 24 hours are shown."


def admin_filter_params(request: HttpRequest) -> dict[str, str]:
    """The filter parameters of the query string that have a value (the last one given)."""
    return {name: value for name in FILTER_PARAMS if (value := request.GET.get(name, "").strip())}


def admin_filter(request: HttpRequest) -> AuditFilter:
    """The request's filter with the admin's default window. A search for an exact request
    id is served by its unique index, so it looks at all time."""
    term = request.GET.get(SEARCH_VAR, "").strip()
    by_request_id = bool(term) and not term.startswith(KEY_PREFIX)
    return audit_filter_parse(
        admin_filter_params(request),
        default_window=None if by_request_id else DEFAULT_WINDOW,
    )


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


class RequestLogChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        """When everything fits on one page, stock Django reads the queryset without a
        LIMIT; keep the bound so the database plans (and reads) a page, never the table."""
        super().get_results(request)
        if not self.multi_page:
            self.result_list = self.result_list[: self.list_per_page]
        # result_count only looked one row ahead: "101 results" would be wrong, so the
        # search bar's count is hidden (it shows when the two counts differ).
        self.full_result_count = self.result_count


class AuditQueryFilter(admin.ListFilter):
    """Claims every filter parameter and applies them in one call to the shared selector.
    Its sidebar entry lists the active filters, each a link that removes it."""

    title = "active filter"

    def __init__(
        self, request: HttpRequest, params: dict[str, list[str]], model: Any, model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        for name in FILTER_PARAMS:
            values = params.pop(name, None)
            if values and values[-1].strip():
                self.used_parameters[name] = values[-1].strip()
        try:
            self.filters = admin_filter(request)
        except ValidationError as exc:
            raise IncorrectLookupParameters(exc) from exc

    def has_output(self) -> bool:
        return True  # always applied: it holds the default time window

    def expected_parameters(self) -> list[str]:
        return list(FILTER_PARAMS)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return request_log_search(filters=self.filters, queryset=queryset)

    def choices(self, changelist: ChangeList) -> list[dict[str, Any]]:
        if not self.used_parameters:
            return [
                {
                    "selected": True,
                    "query_string": changelist.get_query_string(),
                    "display": "none: the last 24 hours",
                }
            ]
        return [
            {
                "selected": True,
                "query_string": changelist.get_query_string({name: None}),
                "display": f"{LABELS[name]}: {value}  ✕",
            }
            for name, value in self.used_parameters.items()
        ]


class PresetLinks(admin.ListFilter):
    """Links that set one parameter to a fixed value. Display only: the parameter is
    claimed and applied by AuditQueryFilter, and nothing here reads the log."""

    parameter: str = ""
    presets: tuple[tuple[str | None, str], ...] = ()
    clears: tuple[str, ...] = ()  # parameters a preset replaces (a time preset drops "to")

    def __init__(
        self, request: HttpRequest, params: dict[str, list[str]], model: Any, model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        self.current = request.GET.get(self.parameter, "").strip() or None

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return [self.parameter]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset

    def is_selected(self, value: str | None) -> bool:
        return self.current == value

    def choices(self, changelist: ChangeList) -> list[dict[str, Any]]:
        return [
            {
                "selected": self.is_selected(value),
                "query_string": changelist.get_query_string(
                    {self.parameter: value, **dict.fromkeys(self.clears)}
                ),
                "display": label,
            }
            for value, label in self.presets
        ]


class TimePresets(PresetLinks):
    title = "time"
    parameter = "from"
    clears = ("to",)
    presets = (
        ("1h", "Last hour"),
        (None, "Last 24 hours"),
        ("7d", "Last 7 days"),
        ("30d", "Last 30 days"),
        ("90d", "Last 90 days"),
    )

    def __init__(self, request: HttpRequest, *args: Any) -> None:
        super().__init__(request, *args)
        self.has_to = bool(request.GET.get("to", "").strip())

    def is_selected(self, value: str | None) -> bool:
        return not self.has_to and self.current == value


class StatusPresets(PresetLinks):
    title = "status"
    parameter = "status"
    presets = (
        (None, "All"),
        ("2xx", "2xx"),
        ("4xx", "4xx"),
        ("401", "401"),
        ("403", "403"),
        ("429", "429"),
        ("5xx", "5xx"),
    )


class EndpointPresets(PresetLinks):
    title = "endpoint"
    parameter = "endpoint"
    presets = ((None, "All"), *((name, name) for name in ENDPOINTS))


class StreamPresets(PresetLinks):
    title = "stream"
    parameter = "stream"
    presets = ((None, "All"), ("true", "Yes"), ("false", "No"))


def _json_pre(value: Any) -> SafeString:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text)


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> SafeString:
    """The last column ("other": keys beyond the known ones) only when some row has any."""
    if not any(row[-1] for row in rows):
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    return format_html(
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<th>{}</th>", ((h,) for h in headers)),
        format_html_join(
            "",
            "<tr>{}</tr>",
            ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
        ),
    )


def _rows(items: Any, names: tuple[str, ...]) -> list[tuple[Any, ...]] | None:
    """Entries stored as lists (``[stage, outcome, reason]``) or as dicts, as table rows;
    None if the shape is something else (then shown as JSON)."""
    if not isinstance(items, list):
        return None
    rows = []
    for item in items:
        if isinstance(item, dict):
            extra = {k: v for k, v in item.items() if k not in names}
            row = [item.get(name, "") for name in names]
            rows.append((*row, orjson.dumps(extra).decode() if extra else ""))
        elif isinstance(item, list | tuple) and len(item) <= len(names):
            rows.append((*item, *[""] * (len(names) - len(item)), ""))
        else:
            return None
    return rows


def _readable(text: Any) -> str:
    """Captured bodies are usually JSON: indented when they parse, as stored otherwise
    (a body cut at the size cap does not parse)."""
    if not isinstance(text, str):
        return "" if text is None else str(text)
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


@admin.register(RequestLog)
class RequestLogAdmin(ScopedAdminMixin, admin.ModelAdmin):
    # Auditors, org and team admins: the records of their subtree, read-only.
    scope_paths = RECORD_PATHS
    view_capability = Capability.AUDIT
    read_only = True
    # The few columns that fit a 1366 px screen; organisation, project, provider,
    # endpoint, tokens and the finer timings are on each record's page.
    list_display = (
        "created_at",
        "request",
        "model_requested",
        "status",
        "finding_list",
        "team_name",
        "key_name",
        "cost",
        "latency",
    )
    list_filter = (AuditQueryFilter, TimePresets, StatusPresets, EndpointPresets, StreamPresets)
    list_select_related = (
        "organization",
        "team__organization",
        "project__team__organization",
        "key",
    )
    search_fields = ("request_id",)  # shows the box; see get_search_results
    search_help_text = SEARCH_HELP
    sortable_by = ("created_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_max_show_all = 0  # "show all" would load the whole table

    fieldsets = (
        (
            "Request",
            {
                "fields": (
                    ("request_id", "created_at"),
                    ("endpoint", "stream", "status_code", "error_code"),
                    ("client_ip", "client_disconnected"),
                    "user_agent",
                )
            },
        ),
        (
            "Identity",
            {
                "fields": (
                    ("organization", "team", "project"),
                    ("key", "key_prefix", "user"),
                    "identity_ids",
                )
            },
        ),
        (
            "Model and routing",
            {
                "fields": (
                    ("model_requested", "model_served"),
                    ("provider", "deployment"),
                    "attempts_table",
                )
            },
        ),
        ("Stage decisions", {"fields": ("decisions_table",)}),
        ("Guardrail findings", {"fields": ("finding_types", "findings_table")}),
        (
            "Usage, cost and latency",
            {
                "fields": (
                    ("input_tokens", "output_tokens", "cached_tokens", "usage_estimated"),
                    "cost",
                    ("latency", "upstream", "overhead", "ttft"),
                )
            },
        ),
        ("Content", {"fields": ("content_display",)}),
        ("Hash chain", {"fields": (("chain", "seq"), "prev_hash_display", "hash_display")}),
    )
    readonly_fields = (
        "cost",
        "latency",
        "upstream",
        "overhead",
        "ttft",
        "identity_ids",
        "attempts_table",
        "decisions_table",
        "findings_table",
        "content_display",
        "prev_hash_display",
        "hash_display",
    )

    # --- the change list -----------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Invalid filter values are named in a message and dropped (instead of the stock
        "?e=1" page that forgets every filter); empty inputs are dropped from the URL."""
        given = [name for name in FILTER_PARAMS if name in request.GET]
        try:
            admin_filter(request)
            bad: list[str] = []
        except ValidationError as exc:
            bad = list(exc.message_dict)
            for name, errors in exc.message_dict.items():
                messages.error(request, f"{LABELS.get(name, name)}: {' '.join(errors)}")
        empty = [name for name in given if not request.GET.get(name, "").strip()]
        repeated = [name for name in given if len(request.GET.getlist(name)) > 1]
        if bad or empty or repeated:
            query = request.GET.copy()
            for name in given:
                value = query.get(name, "").strip()
                query.pop(name)
                if value and name not in bad:
                    query[name] = value
            query.pop(PAGE_VAR, None)
            return HttpResponseRedirect(f"{request.path}?{query.urlencode()}")
        return super().changelist_view(request, extra_context)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RequestLogChangeList

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        cl = super().get_changelist_instance(request)
        # The inputs below carry these; as hidden fields too they would be sent twice.
        for name in INPUT_PARAMS:
            cl.params.pop(name, None)
        cl.search_help_text = self.filter_panel(request)
        return cl

    def filter_panel(self, request: HttpRequest) -> SafeString:
        inputs = format_html_join(
            "",
            '<label style="white-space:nowrap;margin-right:10px">{} '
            '<input type="text" name="{}" value="{}" size="{}" placeholder="{}"></label>',
            (
                (label, name, request.GET.get(name, ""), size, placeholder)
                for name, label, size, placeholder in INPUTS
            ),
        )
        carried = admin_filter_params(request)
        if term := request.GET.get(SEARCH_VAR, "").strip():
            carried[SEARCH_VAR] = term
        url = reverse("admin:audit_requestlog_export")
        return format_html(
            '{}<div class="odock-audit-filters" style="margin-top:8px;line-height:2.2">{}'
            '<input type="submit" value="Filter"></div>'
            '<p class="odock-audit-export">{} Export these records, newest first: '
            '<a href="{}">CSV</a> · <a href="{}">JSONL</a></p>',
            SEARCH_HELP,
            inputs,
            WINDOW_HELP,
            f"{url}?{urlencode({**carried, 'format': 'csv'})}",
            f"{url}?{urlencode({**carried, 'format': 'jsonl'})}",
        )

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

    # --- export ----------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        export_url = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="audit_requestlog_export",
        )
        return [export_url, *super().get_urls()]  # before "<path:object_id>/" catches it

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The change list's records (same filters, same default window, same search) as a
        streamed CSV or JSONL download: only the records the person may list."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        fmt = request.GET.get("format", "csv")
        if fmt not in export.FORMATS:
            return HttpResponse(
                "format must be csv or jsonl", status=400, content_type="text/plain"
            )
        try:
            filters = admin_filter(request)
        except ValidationError as exc:
            text = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            return HttpResponse(text, status=400, content_type="text/plain")
        qs = request_log_search(filters=filters, queryset=self.get_queryset(request))
        qs, _ = self.get_search_results(request, qs, request.GET.get(SEARCH_VAR, ""))
        return export.export_response(qs, fmt, request=request)

    # --- the (read-only) change view -------------------------------------------------------

    # --- columns and figures for people (the exact values stay in the exports) -----------

    @admin.display(description="request id")
    def request(self, obj: RequestLog) -> SafeString:
        return ellipsis(obj.request_id)

    @admin.display(description="status")
    def status(self, obj: RequestLog) -> SafeString:
        if not obj.error_code:
            return format_html("{}", obj.status_code)
        return format_html(
            '{}<br><span class="odock-muted">{}</span>', obj.status_code, obj.error_code
        )

    @admin.display(description="findings")
    def finding_list(self, obj: RequestLog) -> str:
        # Not "findings": a model field of that name would be shown instead (its JSON).
        return obj.finding_types.replace(",", ", ") if obj.finding_types else "—"

    @admin.display(description="team")
    def team_name(self, obj: RequestLog) -> SafeString | str:
        # The name alone (its organisation is on the record's page and in the tooltip).
        if obj.team is None:
            return "—"
        return format_html('<span title="{}">{}</span>', str(obj.team), obj.team.name)

    @admin.display(description="key")
    def key_name(self, obj: RequestLog) -> SafeString | str:
        if obj.key is None:
            return obj.key_prefix or "—"
        return format_html('<span title="{}">{}</span>', obj.key_prefix, obj.key.name)

    @admin.display(description="cost")
    def cost(self, obj: RequestLog) -> str:
        return usd_text(obj.cost_usd)

    @admin.display(description="latency (ms)")
    def latency(self, obj: RequestLog) -> str:
        return ms_text(obj.latency_ms)

    @admin.display(description="upstream (ms)")
    def upstream(self, obj: RequestLog) -> str:
        return ms_text(obj.upstream_ms)

    @admin.display(description="gateway overhead (ms)")
    def overhead(self, obj: RequestLog) -> str:
        return ms_text(obj.overhead_ms)

    @admin.display(description="time to first token (ms)")
    def ttft(self, obj: RequestLog) -> str:
        return ms_text(obj.ttft_ms)

    @admin.display(description="ids")
    def identity_ids(self, obj: RequestLog) -> str:
        """Kept even when the key or team has since been deleted (no FK constraints)."""
        parts = [
            ("org", obj.organization_id),
            ("team", obj.team_id),
            ("project", obj.project_id),
            ("key", obj.key_id),
            ("user", obj.user_id),
        ]
        return " · ".join(f"{name} {value if value is not None else '—'}" for name, value in parts)

    @admin.display(description="attempts")
    def attempts_table(self, obj: RequestLog) -> SafeString | str:
        rows = _rows(obj.attempts, ("deployment", "status", "error_code", "ms"))
        if rows is None:
            return _json_pre(obj.attempts)
        if not rows:
            return "no upstream call"
        return _table(("deployment", "status", "error code", "ms", "other"), rows)

    @admin.display(description="decisions")
    def decisions_table(self, obj: RequestLog) -> SafeString | str:
        rows = _rows(obj.decisions, ("stage", "outcome", "reason"))
        if rows is None:
            return _json_pre(obj.decisions)
        if not rows:
            return "none recorded"
        return _table(("stage", "outcome", "reason", "other"), rows)

    @admin.display(description="findings")
    def findings_table(self, obj: RequestLog) -> SafeString | str:
        rows = _rows(obj.findings, ("detector", "action", "stage"))
        if rows is None:
            return _json_pre(obj.findings)
        if not rows:
            return "none"
        return _table(("detector", "action", "stage", "other"), rows)

    @admin.display(description="content")
    def content_display(self, obj: RequestLog) -> SafeString | str:
        content = obj.content
        if content is None:
            return "not captured (the capture policy was none)"
        if not isinstance(content, dict) or not {"request", "response"} <= content.keys():
            return _json_pre(content)
        return format_html(
            "<p>capture mode: <strong>{}</strong></p>"
            "<h4>Request{}</h4>"
            '<pre style="white-space:pre-wrap;max-height:30em;overflow:auto">{}</pre>'
            "<h4>Response{}</h4>"
            '<pre style="white-space:pre-wrap;max-height:30em;overflow:auto">{}</pre>',
            content.get("mode", "?"),
            " (truncated)" if content.get("request_truncated") else "",
            _readable(content.get("request")),
            " (truncated)" if content.get("response_truncated") else "",
            _readable(content.get("response")),
        )

    @admin.display(description="previous hash")
    def prev_hash_display(self, obj: RequestLog) -> SafeString:
        return format_html("<code>{}</code>", obj.prev_hash or "—")

    @admin.display(description="hash")
    def hash_display(self, obj: RequestLog) -> SafeString:
        return format_html("<code>{}</code>", obj.hash or "—")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RequestLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RequestLog | None = None) -> bool:
        return False


class ReadOnlyAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Audit evidence: visible to auditors of its organisation, never editable here."""

    scope_paths = ORGANIZATION_ID_PATHS
    view_capability = Capability.AUDIT
    read_only = True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    """Sealed, signed segments of the hash chains; ``manage.py audit_verify`` checks them."""

    list_display = (
        "chain",
        "organization_id",
        "first_seq",
        "last_seq",
        "records",
        "last_at",
        "sealed_at",
        "purged_at",
    )
    list_filter = ("purged_at",)
    search_fields = ("chain",)
    show_full_result_count = False


@admin.register(AuditPurge)
class AuditPurgeAdmin(ReadOnlyAdmin):
    """What each retention run removed."""

    list_display = ("ran_at", "organization_id", "retention_days", "segments", "records")
    search_fields = ("organization_id",)
