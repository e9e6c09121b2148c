"""The SSO configuration (one provider per organisation, its claim mapping inline) and
the read-only record of sign-ins.

Who may see what: the configuration is platform-admin only (it decides who gets which
role, so an org admin could otherwise grant themselves more); the sign-in record is
filtered to the viewer's audit area (platform admins see all, including local sign-ins;
org admins and auditors their organisation's)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import WriteOnlySecretsAdminMixin
from apps.identity.roles import Capability
from apps.identity.scope import scope_for
from apps.sso.models import GroupMapping, OidcProvider, SignInEvent
from apps.tenancy.models import Project, Team


def _platform(request: HttpRequest) -> bool:
    return scope_for(request.user).platform


class GroupMappingInline(admin.TabularInline):
    model = GroupMapping
    extra = 1
    fields = ("group", "role", "team", "project")
    verbose_name = "claim mapping row"
    verbose_name_plural = (
        "Claim mapping: group → role at a level (blank team and project: the organisation)"
    )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # On a saved provider's page, offer only its organisation's teams and projects (the
        # model's clean refuses others anyway, e.g. on the add page).
        match = request.resolver_match
        object_id = match.kwargs.get("object_id") if match else None
        provider = OidcProvider.objects.filter(pk=object_id).first() if object_id else None
        if provider is not None and db_field.name == "team":
            kwargs["queryset"] = Team.objects.filter(
                organization_id=provider.organization_id
            ).select_related("organization")
        if provider is not None and db_field.name == "project":
            kwargs["queryset"] = Project.objects.filter(
                team__organization_id=provider.organization_id
            ).select_related("team__organization")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(OidcProvider)
class OidcProviderAdmin(WriteOnlySecretsAdminMixin, admin.ModelAdmin):
    list_display = ("organization", "issuer", "client_id", "enabled", "updated_at")
    list_select_related = ("organization",)
    search_fields = ("organization__name", "issuer", "client_id")
    inlines = [GroupMappingInline]
    fieldsets = (
        (None, {"fields": ("organization", "enabled", "issuer", "client_id", "client_secret")}),
        (
            "Claims",
            {"fields": ("scopes", "groups_claim", "username_claim", "email_claim")},
        ),
        ("Who may sign in", {"fields": ("allowed_email_domains",)}),
    )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _platform(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _platform(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _platform(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _platform(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _platform(request)


@admin.register(SignInEvent)
class SignInEventAdmin(admin.ModelAdmin):
    list_display = ("at", "username", "organization", "method", "outcome", "reason", "client_ip")
    list_filter = ("method", "outcome")
    list_select_related = ("organization",)
    search_fields = ("username", "reason")
    date_hierarchy = "at"
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        area = scope_for(request.user).area(Capability.AUDIT)
        return area.filter(super().get_queryset(request), org="organization_id")

    def _can_audit(self, request: HttpRequest) -> bool:
        # Sign-ins belong to an organisation (local ones to none: platform admins only), so
        # an audit grant at a team or project level has nothing to see here.
        area = scope_for(request.user).area(Capability.AUDIT)
        return area.everything or bool(area.org_ids)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._can_audit(request)

    def has_view_permission(self, request: HttpRequest, obj: SignInEvent | None = None) -> bool:
        if not self._can_audit(request):
            return False
        if obj is None:
            return True
        return scope_for(request.user).area(Capability.AUDIT).covers(org_id=obj.organization_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
