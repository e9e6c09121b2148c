"""Admin for management-API tokens. The secret is shown exactly once, on the page answering
the POST that created it; it is kept nowhere (not in messages, the session or history)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from apps.api.models import AdminToken
from apps.api.services import IssuedAdminToken, admin_token_issue, admin_token_revoke
from apps.core.admin import CredentialStatusFilter
from apps.identity.admin_scope import ORGANIZATION_ID_PATHS, ScopedAdminMixin
from apps.identity.scope import scope_for

SHOW_ONCE_TEMPLATE = "api/admintoken_created.html"


@admin.register(AdminToken)
class AdminTokenAdmin(ScopedAdminMixin, admin.ModelAdmin):
    # An organisation's tokens act on its whole subtree: org-level area only (a platform
    # token, with no organisation, is a platform admin's).
    scope_paths = ORGANIZATION_ID_PATHS
    # Never a digest or a secret: those exist only on the show-once page.
    add_fields = ("name", "organization", "expires_at")
    status_fields = ("prefix", "status", "created_at", "last_used_at", "revoked_at")
    list_display = (
        "name",
        "scope",
        "prefix",
        "status",
        "expires_at",
        "last_used_at",
        "created_at",
    )
    list_filter = (CredentialStatusFilter, ("organization", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("organization",)
    search_fields = ("name", "prefix", "organization__name")
    search_help_text = "Token name or prefix, or organisation."
    autocomplete_fields = ("organization",)
    actions = ("revoke_tokens",)

    @admin.display(description="scope")
    def scope(self, obj: AdminToken) -> str:
        return obj.organization.name if obj.organization_id else "platform (all organisations)"

    @admin.display(description="status")
    def status(self, obj: AdminToken) -> str:
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired else "active"

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "organization" and not scope_for(request.user).platform:
            # Blank means a platform-wide token: only a platform admin may issue one.
            field.required = True
        return field

    def get_fields(self, request: HttpRequest, obj: AdminToken | None = None) -> Any:
        return self.add_fields if obj is None else (*self.add_fields, *self.status_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: AdminToken | None = None) -> Any:
        # A token's scope is fixed: widening or moving it means issuing a new token.
        return () if obj is None else ("organization", *self.status_fields)

    def save_model(self, request: HttpRequest, obj: AdminToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = admin_token_issue(
            name=obj.name, organization=obj.organization, expires_at=obj.expires_at
        )
        # The admin goes on with ``obj`` (history entry, response): make it the issued row.
        for field in AdminToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.token, field.attname))
        obj._state.adding = False
        obj._state.db = issued.token._state.db
        # Kept on this request only, for response_add; never in the session or messages.
        request._odock_issued_admin_token = issued  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: AdminToken, post_url_continue: Any = None
    ) -> HttpResponse:
        issued: IssuedAdminToken | None = getattr(request, "_odock_issued_admin_token", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Admin token created",
            "token": issued.token,
            "secret": issued.secret,
            "token_url": reverse("admin:api_admintoken_change", args=[issued.token.pk]),
        }
        response = TemplateResponse(request, SHOW_ONCE_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[AdminToken]) -> None:
        revoked = 0
        for token in queryset:
            if not token.is_revoked:
                admin_token_revoke(token=token)
                self.log_change(request, token, "Revoked the token.")
                revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
