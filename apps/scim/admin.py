"""Admin for SCIM: tokens (the secret shown once, on the page answering the POST that
created it; kept nowhere), the organisation's deprovisioning policy, the groups an
identity provider pushed (an administrator maps each to a role), and the identities
(read-only: the identity provider owns them).

Everything is limited to the organisations the person manages (an organisation-level
``manage`` grant: a SCIM token acts on a whole organisation).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from apps.core.admin import CredentialStatusFilter, instance_adopt
from apps.identity.admin_scope import ORGANIZATION_ID_PATHS, ScopedAdminMixin
from apps.identity.roles import Capability
from apps.identity.scope import Area, scope_for
from apps.scim.models import ScimGroup, ScimIdentity, ScimSettings, ScimToken
from apps.scim.provisioning import group_mapping_changed
from apps.scim.tokens import IssuedScimToken, scim_token_issue, scim_token_revoke
from apps.tenancy.models import Organization, Project, Team

SHOW_ONCE_TEMPLATE = "scim/scimtoken_created.html"


def _area(request: HttpRequest) -> Area:
    return scope_for(request.user).area(Capability.MANAGE)


def _orgs(request: HttpRequest) -> QuerySet[Organization]:
    """The organisations the person manages as a whole."""
    return _area(request).filter(Organization.objects.all(), org="id")


class _OrgScoped(ScopedAdminMixin, admin.ModelAdmin):
    """Rows of the organisations the person manages as a whole (org admins; a team's
    grant never reaches them); only those in the choices, and a POST naming another one is
    refused (never trust the form's choices alone)."""

    scope_paths = ORGANIZATION_ID_PATHS
    view_capability = Capability.MANAGE
    write_capability = Capability.MANAGE

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return _area(request).filter(super().get_queryset(request), org="organization_id")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "organization":
            kwargs["queryset"] = _orgs(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _check_org(self, request: HttpRequest, organization_id: int | None) -> None:
        if not _area(request).covers(org_id=organization_id):
            raise PermissionDenied("Not an organisation you manage.")


@admin.register(ScimToken)
class ScimTokenAdmin(_OrgScoped):
    # Never a digest or a secret: those exist only on the show-once page.
    add_fields = ("name", "organization", "expires_at")
    status_fields = ("prefix", "status", "created_at", "last_used_at", "revoked_at")
    list_display = ("name", "organization", "prefix", "status", "expires_at", "last_used_at")
    list_filter = (CredentialStatusFilter,)
    list_select_related = ("organization",)
    search_fields = ("name", "prefix", "organization__name")
    actions = ("revoke_tokens",)

    @admin.display(description="status")
    def status(self, obj: ScimToken) -> str:
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired else "active"

    def get_fields(self, request: HttpRequest, obj: ScimToken | None = None) -> Any:
        return self.add_fields if obj is None else (*self.add_fields, *self.status_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: ScimToken | None = None) -> Any:
        # A token's organisation is fixed: moving it means issuing a new token.
        return () if obj is None else ("organization", *self.status_fields)

    def save_model(self, request: HttpRequest, obj: ScimToken, form: Any, change: bool) -> None:
        self._check_org(request, obj.organization_id)
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = scim_token_issue(
            organization=obj.organization, name=obj.name, expires_at=obj.expires_at
        )
        instance_adopt(obj, issued.token)
        # Kept on this request only, for response_add; never in the session or messages.
        request._odock_issued_scim_token = issued  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: ScimToken, post_url_continue: Any = None
    ) -> HttpResponse:
        issued: IssuedScimToken | None = getattr(request, "_odock_issued_scim_token", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "SCIM token created",
            "token": issued.token,
            "secret": issued.secret,
            "base_url": request.build_absolute_uri(reverse("scim:root")),
            "token_url": reverse("admin:scim_scimtoken_change", args=[issued.token.pk]),
        }
        response = TemplateResponse(request, SHOW_ONCE_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ScimToken]) -> None:
        revoked = 0
        for token in queryset:
            if not token.is_revoked:
                scim_token_revoke(token=token)
                self.log_change(request, token, "Revoked the token.")
                revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


@admin.register(ScimSettings)
class ScimSettingsAdmin(_OrgScoped):
    list_display = ("organization", "on_deprovision")
    list_select_related = ("organization",)

    def get_readonly_fields(self, request: HttpRequest, obj: ScimSettings | None = None) -> Any:
        return () if obj is None else ("organization",)

    def save_model(self, request: HttpRequest, obj: ScimSettings, form: Any, change: bool) -> None:
        self._check_org(request, obj.organization_id)
        super().save_model(request, obj, form, change)


@admin.register(ScimGroup)
class ScimGroupAdmin(_OrgScoped):
    """Groups come from the identity provider; here an administrator only chooses the role
    they give (blank: nothing) and its level."""

    list_display = ("display_name", "organization", "role", "level", "member_count")
    list_filter = ("role",)
    list_select_related = ("organization", "team", "project")
    search_fields = ("display_name", "external_id", "organization__name")
    fields = ("display_name", "organization", "external_id", "role", "team", "project")
    readonly_fields = ("display_name", "organization", "external_id")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(members_count=Count("members"))

    @admin.display(description="members", ordering="members_count")
    def member_count(self, obj: ScimGroup) -> int:
        return obj.members_count  # type: ignore[attr-defined]

    @admin.display(description="level")
    def level(self, obj: ScimGroup) -> str:
        if obj.project_id:
            return f"project {obj.project}"
        if obj.team_id:
            return f"team {obj.team}"
        return f"organisation {obj.organization}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the identity provider creates groups

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # and deletes them: a group deleted here would come back

    def get_form(self, request: HttpRequest, obj: ScimGroup | None = None, **kwargs: Any) -> Any:
        request._odock_scim_group = obj  # type: ignore[attr-defined]
        return super().get_form(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        group: ScimGroup | None = getattr(request, "_odock_scim_group", None)
        org_id = group.organization_id if group is not None else None
        if db_field.name == "team":
            kwargs["queryset"] = Team.objects.filter(organization_id=org_id)
        elif db_field.name == "project":
            kwargs["queryset"] = Project.objects.filter(team__organization_id=org_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: ScimGroup, form: Any, change: bool) -> None:
        self._check_org(request, obj.organization_id)
        super().save_model(request, obj, form, change)
        group_mapping_changed(obj)


@admin.register(ScimIdentity)
class ScimIdentityAdmin(_OrgScoped):
    """Who the identity provider provisioned, read-only."""

    list_display = ("user_name", "organization", "user", "active", "updated_at")
    list_filter = ("active",)
    list_select_related = ("organization", "user")
    search_fields = ("user_name", "email", "external_id", "organization__name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
