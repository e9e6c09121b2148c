"""Admin for virtual keys. Secrets are shown exactly once, on the page answering the POST
that created them (issue or rotate); no page ever shows a secret or a digest again.

A key's change page also shows its effective policy: what the gateway enforces for it,
merged from every level above, with where each part comes from."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.safestring import SafeString
from django.views.decorators.http import require_http_methods

from apps.core.admin import (
    CredentialStatusFilter,
    ServiceSaveAdminMixin,
    instance_adopt,
    usd_text,
)
from apps.core.services import Saved
from apps.identity.admin_scope import KEY_PATHS, ScopedAdminMixin
from apps.keys.models import VirtualKey
from apps.keys.services import IssuedKey, key_issue, key_revoke, key_rotate, key_update
from apps.policies.admin import (
    LevelRulesMixin,
    early_saved,
    percent_text,
    percent_used,
    period_end_text,
    rule_inlines_for,
    usd,
)
from apps.policies.models import Budget
from apps.policies.selectors import effective_policy_for_key, key_levels
from apps.policies.spend import budget_spent_usd

SHOW_ONCE_TEMPLATE = "admin/keys/virtualkey/key_created.html"
EFFECTIVE_POLICY_TEMPLATE = "admin/keys/virtualkey/effective_policy.html"
SPEND_BY_LEVEL_TEMPLATE = "admin/keys/virtualkey/spend_by_level.html"
CONFIRM_TEMPLATE = "admin/keys/virtualkey/key_action_confirm.html"
# Key page buttons: what each does, as the confirmation page says it.
KEY_ACTIONS = {
    "revoke": (
        "Revoke key",
        "The key stops working at once, for every client using it. This cannot be undone: "
        "a revoked key is never valid again.",
    ),
    "rotate": (
        "Rotate key",
        "A new secret is issued and shown once, on the next page. The current secret keeps "
        "working for a grace period so clients can move to the new one.",
    ),
}
LEVEL_NAMES = {
    "key": "Key",
    "project": "Project",
    "team": "Team",
    "org": "Organisation",
    "user": "Owner",
}
RATE_LIMIT_KINDS = {
    "rpm": "requests / minute",
    "tpm": "tokens / minute",
    "concurrency": "concurrent requests",
}


def effective_policy_context(policy: dict[str, Any]) -> dict[str, Any]:
    """``effective_policy_for_key``'s dict made ready to print: money formatted, percent
    used and period ends computed, each level's model list in hierarchy order."""
    by_level = policy["models"]["by_level"]
    return {
        "levels": policy["levels"],
        "effective_models": policy["models"]["effective"],
        "models_by_level": [(label, by_level.get(label)) for label in policy["levels"]],
        "rate_limits": [
            {**limit, "kind_label": RATE_LIMIT_KINDS.get(limit["kind"], limit["kind"])}
            for limit in policy["rate_limits"]
        ],
        "budgets": [
            {
                **budget,
                "spent": usd(budget["spent_usd"]),
                "limit": usd(budget["limit_usd"]),
                "remaining": usd(budget["remaining_usd"]),
                "percent": percent_text(percent_used(budget["spent_usd"], budget["limit_usd"])),
                "ends": period_end_text(budget["period_ends"]),
            }
            for budget in policy["budgets"]
        ],
    }


def spend_by_level_rows(key: VirtualKey, budgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The key's levels, the key first: this calendar month's settled spend at each (all
    its keys' traffic, for a parent level) and each budget attached there with what is
    left. ``budgets`` are ``effective_policy_for_key``'s, already measured per period."""
    now = datetime.now(UTC)
    rows = []
    for level in reversed(key_levels(key)):  # key, project, team, org; then the owner
        month = Budget(**{level.field: level.obj}, period="monthly", limit_usd=Decimal(0))
        here = [b for b in budgets if b["level"] == level.label]
        rows.append(
            {
                "name": LEVEL_NAMES[level.kind],
                "label": level.label,
                "month_spent": usd_text(budget_spent_usd(month, now)),
                "budgets": [
                    {
                        "limit": usd_text(b["limit_usd"]),
                        "period": b["period"],
                        "model": b["model"],
                        "spent": usd_text(b["spent_usd"]),
                        "remaining": usd_text(b["remaining_usd"]),
                        "percent": percent_text(percent_used(b["spent_usd"], b["limit_usd"])),
                        "hard": b["hard"],
                        "binding": b.get("binding", False),
                    }
                    for b in here
                ],
            }
        )
    return rows


@admin.register(VirtualKey)
class VirtualKeyAdmin(ScopedAdminMixin, ServiceSaveAdminMixin, LevelRulesMixin, admin.ModelAdmin):
    scope_paths = KEY_PATHS
    # No digest here, ever; a secret appears only on the show-once page.
    status_fields = (
        "prefix",
        "status",
        "created_at",
        "last_used_at",
        "revoked_at",
        "previous_valid_until",
    )
    add_fieldsets = ((None, {"fields": ("project", "name", "owner", "expires_at")}),)
    fieldsets = (
        *add_fieldsets,
        (
            "Status",
            {
                "fields": status_fields,
                "description": (
                    "Only a digest of the secret is stored. After a rotation the previous "
                    "secret keeps working until 'previous valid until'."
                ),
            },
        ),
        (
            "Spend and budgets by level",
            {
                "fields": ("spend_by_level",),
                "description": (
                    "Settled spend from the request log (requests still in flight are not "
                    "counted yet). A parent level's spend is all its keys' traffic."
                ),
            },
        ),
        (
            "Effective policy",
            {
                "fields": ("effective_policy",),
                "description": (
                    "What the gateway enforces for this key, merged from its organisation, "
                    "team, project and the key itself. Every limit listed is enforced; "
                    "'binding' marks the tightest of each kind, so a looser limit on a "
                    "child level never loosens its parent's."
                ),
            },
        ),
    )
    readonly_fields = ("project", *status_fields, "spend_by_level", "effective_policy")
    # What fits a 1366 px screen; expiry, creation and rotation dates are on the key's page.
    list_display = ("name", "project", "prefix", "status", "owner", "last_used_at")
    list_filter = (
        CredentialStatusFilter,
        ("project__team__organization", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("project__team__organization", "owner")
    search_fields = (
        "name",
        "prefix",
        "project__name",
        "project__team__name",
        "project__team__organization__name",
        "owner__username",
    )
    search_help_text = "Key name or prefix, project, team, organisation or owner username."
    autocomplete_fields = ("project", "owner")
    actions = ("revoke_keys", "rotate_key")
    rule_inlines = rule_inlines_for("key")

    @admin.display(description="status")
    def status(self, obj: VirtualKey) -> str:
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired else "active"

    def _policy(self, obj: VirtualKey) -> dict[str, Any]:
        # Read once per page: both sections show it.
        if not hasattr(obj, "_odock_policy"):
            obj._odock_policy = effective_policy_for_key(obj)  # type: ignore[attr-defined]
        return obj._odock_policy  # type: ignore[attr-defined]

    @admin.display(description="key, project, team, organisation, owner")
    def spend_by_level(self, obj: VirtualKey) -> SafeString:
        rows = spend_by_level_rows(obj, self._policy(obj)["budgets"])
        return render_to_string(SPEND_BY_LEVEL_TEMPLATE, {"rows": rows})

    @admin.display(description="merged from every level")
    def effective_policy(self, obj: VirtualKey) -> SafeString:
        context = effective_policy_context(self._policy(obj))
        # A rendered template is already safe markup; it autoescapes every value.
        return render_to_string(EFFECTIVE_POLICY_TEMPLATE, context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[VirtualKey]:
        # str(key.project) names its team and organisation.
        return super().get_queryset(request).select_related("project__team__organization")

    def get_fieldsets(self, request: HttpRequest, obj: VirtualKey | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: VirtualKey | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def save_service(self, *, stored: Any, obj: Any, data: dict[str, Any]) -> Saved[VirtualKey]:
        key, changed = key_update(key=stored, data=data)
        return Saved(key, False, tuple(changed))

    def save_model(self, request: HttpRequest, obj: VirtualKey, form: Any, change: bool) -> None:
        if early_saved(request, obj) and obj.pk is not None:
            return  # issued already, before the budget and limit inlines were checked
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = key_issue(
            project=obj.project, name=obj.name, owner=obj.owner, expires_at=obj.expires_at
        )
        # The admin goes on with ``obj`` (history entry, response): make it the issued row.
        instance_adopt(obj, issued.key)
        # Kept on this request only, for response_add; never in the session or messages.
        request._odock_issued_key = issued  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: VirtualKey, post_url_continue: Any = None
    ) -> HttpResponse:
        issued = getattr(request, "_odock_issued_key", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        return self._secret_response(request, issued, rotated=False)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> None:
        revoked = 0
        for key in queryset:
            if not key.is_revoked:
                key_revoke(key=key)
                self.log_change(request, key, "Revoked the key.")
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)

    @admin.action(description="Rotate key (shows the new secret once)", permissions=["change"])
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> Any:
        keys = list(queryset[:2])
        if len(keys) != 1:
            self.message_user(request, "Select exactly one key to rotate.", messages.ERROR)
            return None
        if keys[0].is_revoked:
            self.message_user(request, "A revoked key cannot be rotated.", messages.ERROR)
            return None
        issued = key_rotate(key=keys[0])
        self.log_change(request, issued.key, "Rotated the key.")
        return self._secret_response(request, issued, rotated=True)

    # --- the key page's Revoke and Rotate buttons ----------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/revoke/",
                view(require_http_methods(["GET", "POST"])(self.revoke_view)),
                name="keys_virtualkey_revoke",
            ),
            path(
                "<path:object_id>/rotate/",
                view(require_http_methods(["GET", "POST"])(self.rotate_view)),
                name="keys_virtualkey_rotate",
            ),
            *super().get_urls(),
        ]

    def _key_for_action(self, request: HttpRequest, object_id: str) -> VirtualKey:
        """The key, if this person may change it (another area's key does not exist)."""
        key = self.get_object(request, unquote(object_id))
        if key is None:
            raise PermissionDenied
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        return key

    def _confirm(self, request: HttpRequest, key: VirtualKey, action: str) -> HttpResponse:
        title, explanation = KEY_ACTIONS[action]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{title}: {key.name}?",
            "key": key,
            "action": action,
            "button": title,
            "explanation": explanation,
            "key_url": reverse("admin:keys_virtualkey_change", args=[key.pk]),
        }
        return TemplateResponse(request, CONFIRM_TEMPLATE, context)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        key = self._key_for_action(request, object_id)
        key_url = reverse("admin:keys_virtualkey_change", args=[key.pk])
        if key.is_revoked:
            self.message_user(request, "This key is already revoked.", messages.WARNING)
            return HttpResponseRedirect(key_url)
        if request.method != "POST":
            return self._confirm(request, key, "revoke")
        key_revoke(key=key)
        self.log_change(request, key, "Revoked the key.")
        self.message_user(request, f"Revoked key {key.name}.", messages.SUCCESS)
        return HttpResponseRedirect(key_url)

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        key = self._key_for_action(request, object_id)
        if key.is_revoked:
            self.message_user(request, "A revoked key cannot be rotated.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:keys_virtualkey_change", args=[key.pk]))
        if request.method != "POST":
            return self._confirm(request, key, "rotate")
        issued = key_rotate(key=key)
        self.log_change(request, issued.key, "Rotated the key.")
        return self._secret_response(request, issued, rotated=True)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        key = self.get_object(request, unquote(object_id))
        may = key is not None and not key.is_revoked and self.has_change_permission(request, key)
        extra = {**(extra_context or {}), "odock_key_actions": may}
        return super().change_view(request, object_id, form_url, extra)

    def _secret_response(
        self, request: HttpRequest, issued: IssuedKey, *, rotated: bool
    ) -> HttpResponse:
        """The one page that shows a secret: rendered in answer to the POST, never cached."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Key rotated" if rotated else "Key created",
            "key": issued.key,
            "secret": issued.secret,
            "rotated": rotated,
            "key_url": reverse("admin:keys_virtualkey_change", args=[issued.key.pk]),
        }
        response = TemplateResponse(request, SHOW_ONCE_TEMPLATE, context)
        add_never_cache_headers(response)
        return response
