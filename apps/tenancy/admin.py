"""Admin for the hierarchy: each level lists its children inline and links to their pages,
and shows its budgets against this period's spend."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from apps.core.admin import ServiceSaveAdminMixin, WriteOnlySecretsAdminMixin
from apps.core.forms import WriteOnlySecretsModelForm
from apps.core.services import Saved
from apps.identity.admin_scope import (
    ORGANIZATION_PATHS,
    PROJECT_PATHS,
    TEAM_PATHS,
    ScopedAdminMixin,
    ScopedInlineMixin,
)
from apps.keys.models import VirtualKey
from apps.policies.admin import (
    LevelRulesMixin,
    budget_usage_at_level,
    budget_usage_table,
    rule_inlines_for,
)
from apps.tenancy.models import Organization, Project, Team
from apps.tenancy.services import organization_upsert

SPEND_FIELD = "spend_vs_limit"


class ChildLevelInline(ScopedInlineMixin, admin.TabularInline):
    """A child level's name and state; its rules and children are on its own (linked) page."""

    fields = ("name", "is_active", "created_at")
    readonly_fields = ("created_at",)
    extra = 0
    show_change_link = True


class TeamInline(ChildLevelInline):
    model = Team


class ProjectInline(ChildLevelInline):
    model = Project


class VirtualKeyInline(ScopedInlineMixin, admin.TabularInline):
    """Read-only list of a project's keys; issuing and rotating happen on the key admin."""

    model = VirtualKey
    fields = ("name", "prefix", "owner", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[VirtualKey]:
        return super().get_queryset(request).select_related("owner")

    def has_add_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False


class LevelSpendMixin:
    """For a level's ModelAdmin: a read-only "Spend vs limit" section on change pages.

    ``spend_level`` is the rule field naming this level (``organization``, ``team``...).
    """

    spend_level: str = ""
    readonly_fields: Any = (SPEND_FIELD,)

    @admin.display(description="budgets at this level")
    def spend_vs_limit(self, obj: Model) -> SafeString:
        return budget_usage_table(budget_usage_at_level(self.spend_level, obj))

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> Any:
        # Django's default single fieldset lists every readonly field; the spend table
        # goes in its own section instead, and only once the level exists.
        fieldsets = [
            (name, {**options, "fields": [f for f in options["fields"] if f != SPEND_FIELD]})
            for name, options in super().get_fieldsets(request, obj)  # type: ignore[misc]
        ]
        if obj is not None:
            fieldsets.append(
                (
                    "Spend vs limit",
                    {
                        "fields": [SPEND_FIELD],
                        "description": (
                            "Settled spend in each budget's current period, from the request "
                            "log (requests still in flight are not counted yet)."
                        ),
                    },
                )
            )
        return fieldsets


def email_list_clean(value: str) -> str:
    """Comma-separated addresses, each checked, stored as ``a@x, b@y`` (how the alert
    sender splits them)."""
    addresses = [part.strip() for part in value.split(",") if part.strip()]
    errors = []
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            errors.append(f"{address!r} is not a valid email address.")
    if errors:
        raise ValidationError(errors)
    return ", ".join(addresses)


class OrganizationForm(WriteOnlySecretsModelForm):
    def clean_alert_emails(self) -> str:
        return email_list_clean(self.cleaned_data.get("alert_emails") or "")


@admin.register(Organization)
class OrganizationAdmin(
    ScopedAdminMixin,
    ServiceSaveAdminMixin,
    LevelSpendMixin,
    WriteOnlySecretsAdminMixin,
    LevelRulesMixin,
    admin.ModelAdmin,
):
    form = OrganizationForm
    # An org admin changes its organisation's settings; only a platform admin adds,
    # renames, deactivates or deletes organisations.
    scope_paths = ORGANIZATION_PATHS
    container_paths = ()
    identity_fields = ("name", "is_active")
    fieldsets = (
        (None, {"fields": ("name", "display_name", "is_active")}),
        (
            "Outages and alerts",
            {
                "fields": (
                    "outage_policy",
                    "alert_webhook_url",
                    "alert_webhook_secret",
                    "alert_emails",
                ),
                "description": (
                    "What the gateway does when Redis or the database is unreachable, and "
                    "where budget threshold alerts go. The webhook secret is write-only."
                ),
            },
        ),
        ("Retention", {"fields": ("audit_retention_days", "response_retention_days")}),
    )
    list_display = ("name", "display_name", "is_active", "outage_policy", "created_at")
    list_filter = ("is_active", "outage_policy")
    search_fields = ("name", "display_name")
    inlines = (TeamInline,)
    rule_inlines = rule_inlines_for("organization")
    spend_level = "organization"

    def save_service(
        self, *, stored: Model | None, obj: Model, data: dict[str, Any]
    ) -> Saved[Organization]:
        # An org admin's form has no name field (read-only to them): the stored name stands.
        name = data.get("name") or (stored or obj).name
        return organization_upsert(name=name, data=data, organization=stored or obj)


@admin.register(Team)
class TeamAdmin(
    ScopedAdminMixin, ServiceSaveAdminMixin, LevelSpendMixin, LevelRulesMixin, admin.ModelAdmin
):
    # A team admin edits its team's page (rules, projects) but not the team itself: its
    # name, organisation and state belong to the organisation's admins.
    scope_paths = TEAM_PATHS
    container_paths = ({"org": "organization_id"},)
    identity_fields = ("name", "organization", "is_active")
    list_display = ("name", "organization", "is_active", "created_at")
    list_filter = ("is_active", ("organization", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("organization",)
    search_fields = ("name", "organization__name")
    autocomplete_fields = ("organization",)
    inlines = (ProjectInline,)
    rule_inlines = rule_inlines_for("team")
    spend_level = "team"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        # str(team) names its organisation (autocomplete results, change page title).
        return super().get_queryset(request).select_related("organization")


@admin.register(Project)
class ProjectAdmin(
    ScopedAdminMixin, ServiceSaveAdminMixin, LevelSpendMixin, LevelRulesMixin, admin.ModelAdmin
):
    scope_paths = PROJECT_PATHS
    container_paths = ({"org": "team__organization_id", "team": "team_id"},)
    identity_fields = ("team",)
    list_display = ("name", "team", "organization", "is_active", "created_at")
    list_filter = ("is_active", ("team__organization", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("team__organization",)
    search_fields = ("name", "team__name", "team__organization__name")
    autocomplete_fields = ("team",)
    inlines = (VirtualKeyInline,)
    rule_inlines = rule_inlines_for("project")
    spend_level = "project"

    @admin.display(description="organization", ordering="team__organization__name")
    def organization(self, obj: Project) -> str:
        return obj.team.organization.name

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        # str(project) names its team and organisation.
        return super().get_queryset(request).select_related("team__organization")
