"""Admin for the change trail (read-only: evidence is not edited) and evidence packs
(requested here, built by Celery, downloaded here by staff only — never a public URL)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import PAGE_VAR
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.compliance.models import ConfigChange, EvidencePack, PackStatus
from apps.compliance.services import (
    evidence_pack_delete,
    evidence_pack_rebuild,
    evidence_pack_request,
)
from apps.compliance.trail import SECRET_CHANGED, tracked_models
from apps.identity.admin_scope import ORGANIZATION_ID_PATHS, ScopedAdminMixin
from apps.identity.roles import Capability
from apps.identity.scope import scope_for

MAX_ACTOR_CHOICES = 100


class NoCountPaginator(Paginator):
    """Looks one row past the page instead of counting the whole (growing) trail."""

    def __init__(self, object_list: QuerySet, per_page: int, *, page_number: int = 1) -> None:
        super().__init__(object_list, per_page)
        self.page_number = max(page_number, 1)

    @cached_property
    def count(self) -> int:
        offset = (self.page_number - 1) * self.per_page
        window = self.object_list.values_list("pk", flat=True)[offset : offset + self.per_page + 1]
        return offset + len(window)


class ActorFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        # Distinct over the (actor, -created_at) index; people and tokens are few. Only
        # the actors of the changes the viewer may see (no names from other organisations).
        actors = (
            model_admin.get_queryset(request)
            .order_by("actor")
            .values_list("actor", flat=True)
            .distinct()[:MAX_ACTOR_CHOICES]
        )
        return [(a, a) for a in actors]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(actor=self.value()) if self.value() else queryset


class ObjectTypeFilter(admin.SimpleListFilter):
    title = "object type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(m._meta.label_lower, m._meta.verbose_name.capitalize()) for m in tracked_models()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(object_type=self.value()) if self.value() else queryset


@admin.register(ConfigChange)
class ConfigChangeAdmin(ScopedAdminMixin, admin.ModelAdmin):
    # The trail names an organisation per change: auditors of that organisation read it
    # (a team-level auditor sees none: the trail has no team ids).
    scope_paths = ORGANIZATION_ID_PATHS
    view_capability = Capability.AUDIT
    read_only = True
    list_display = (
        "created_at",
        "actor",
        "action",
        "object_type",
        "object_repr",
        "changed_fields",
        "client_ip",
        "request_id",
    )
    list_filter = (
        ActorFilter,
        "action",
        ObjectTypeFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("object_repr", "actor", "request_id", "object_id")
    search_help_text = "Object name, actor, request id or object id."
    fields = (
        "created_at",
        "actor",
        "actor_user_id",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "organization_id",
        "changes_table",
        "request_id",
        "client_ip",
    )
    readonly_fields = fields
    sortable_by = ("created_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_max_show_all = 0

    @admin.display(description="fields")
    def changed_fields(self, obj: ConfigChange) -> str:
        return ", ".join(sorted(obj.changes or {}))

    @admin.display(description="changes")
    def changes_table(self, obj: ConfigChange) -> SafeString:
        if not obj.changes:
            return format_html("<p>{}</p>", "No field values.")
        rows = format_html_join(
            "\n",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (name, "(secret)", "changed")
                if value == SECRET_CHANGED
                else (name, _shown(value.get("before")), _shown(value.get("after")))
                for name, value in sorted(obj.changes.items())
            ),
        )
        return format_html(
            '<table class="odock-changes"><thead><tr><th>Field</th><th>Before</th>'
            "<th>After</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_paginator(
        self, request: HttpRequest, queryset: QuerySet, per_page: int, *args: Any, **kwargs: Any
    ) -> Paginator:
        try:
            page_number = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            page_number = 1
        return NoCountPaginator(queryset, per_page, page_number=page_number)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ConfigChange | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ConfigChange | None = None) -> bool:
        return False


def _shown(value: Any) -> str:
    return "—" if value is None else str(value)


@admin.register(EvidencePack)
class EvidencePackAdmin(ScopedAdminMixin, admin.ModelAdmin):
    # Auditors of an organisation request, list and download its packs; deleting one is
    # the platform's (superuser's) alone.
    scope_paths = ORGANIZATION_ID_PATHS
    view_capability = Capability.AUDIT
    write_capability = Capability.AUDIT
    list_display = (
        "organization",
        "period_start",
        "period_end",
        "status",
        "requested_by",
        "created_at",
        "finished_at",
        "downloads",
    )
    list_filter = ("status", ("organization", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("organization", "requested_by")
    search_fields = ("organization__name",)
    autocomplete_fields = ("organization",)
    add_fields = ("organization", "period_start", "period_end")
    detail_fields = (
        *add_fields,
        "status",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "downloads",
        "summary",
    )
    actions = ("rebuild_packs",)

    @admin.display(description="files")
    def downloads(self, obj: EvidencePack) -> SafeString | str:
        if obj.status != PackStatus.DONE or not obj.files:
            return "—"
        return format_html_join(
            " · ",
            '<a href="{}">{}</a>',
            ((self.download_url(obj, f["name"]), f["name"]) for f in obj.files),
        )

    def download_url(self, obj: EvidencePack, name: str) -> str:
        return reverse("admin:compliance_evidencepack_download", args=[obj.pk, name])

    def get_fields(self, request: HttpRequest, obj: EvidencePack | None = None) -> Any:
        return self.add_fields if obj is None else self.detail_fields

    def get_readonly_fields(self, request: HttpRequest, obj: EvidencePack | None = None) -> Any:
        return () if obj is None else self.detail_fields

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        return super().add_view(
            request, form_url, {"title": "Build evidence pack", **(extra_context or {})}
        )

    def save_model(self, request: HttpRequest, obj: EvidencePack, form: Any, change: bool) -> None:
        pack = evidence_pack_request(
            organization=obj.organization,
            period_start=obj.period_start,
            period_end=obj.period_end,
            requested_by=request.user,
        )
        # The admin goes on with ``obj`` (history entry, redirect): make it the new row.
        for field in EvidencePack._meta.concrete_fields:
            setattr(obj, field.attname, getattr(pack, field.attname))
        obj._state.adding = False
        obj._state.db = pack._state.db

    def delete_model(self, request: HttpRequest, obj: EvidencePack) -> None:
        evidence_pack_delete(pack=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[EvidencePack]) -> None:
        for pack in queryset:
            evidence_pack_delete(pack=pack)

    def has_change_permission(self, request: HttpRequest, obj: EvidencePack | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: EvidencePack | None = None) -> bool:
        return scope_for(request.user).platform

    @admin.action(description="Rebuild selected packs", permissions=["add"])
    def rebuild_packs(self, request: HttpRequest, queryset: QuerySet[EvidencePack]) -> None:
        queued = sum(evidence_pack_rebuild(pack=pack) for pack in queryset)
        self.message_user(request, f"Queued {queued} pack(s) for a rebuild.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        download = path(
            "<path:object_id>/download/<str:name>/",
            self.admin_site.admin_view(self.download_view),
            name="compliance_evidencepack_download",
        )
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, object_id: str, name: str) -> FileResponse:
        """Admin users only (``admin_view``), for a pack inside their audit area (else
        ``get_object`` finds none); by manifest name, so no path from the URL ever reaches
        the storage."""
        pack = self.get_object(request, object_id)
        if pack is None:
            raise Http404("No such evidence pack.")
        if not self.has_view_permission(request, pack):
            raise PermissionDenied
        entry = pack.file_entry(name)
        if pack.status != PackStatus.DONE or entry is None:
            raise Http404("No such file in this pack.")
        try:
            handle = default_storage.open(entry["path"], "rb")
        except FileNotFoundError:
            raise Http404("The file is missing from storage.") from None
        return FileResponse(handle, as_attachment=True, filename=entry["name"])
