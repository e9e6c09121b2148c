"""Admin for the hierarchy: each level lists its children inline and links to their pages."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import WriteOnlySecretsAdminMixin
from apps.keys.models import VirtualKey
from apps.policies.admin import LevelRulesMixin, rule_inlines_for
from apps.tenancy.models import Organization, Project, Team


class ChildLevelInline(admin.TabularInline):
    """A child level's name and state; its rules and children are on its own (linked) page."""

    fields = ("name", "is_active", "created_at")
    readonly_fields = ("created_at",)
    extra = 0
    show_change_link = True


class TeamInline(ChildLevelInline):
    model = Team


class ProjectInline(ChildLevelInline):
    model = Project


class VirtualKeyInline(admin.TabularInline):
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


@admin.register(Organization)
class OrganizationAdmin(WriteOnlySecretsAdminMixin, LevelRulesMixin, admin.ModelAdmin):
    list_display = ("name", "display_name", "is_active", "outage_policy", "created_at")
    list_filter = ("is_active", "outage_policy")
    search_fields = ("name", "display_name")
    inlines = (TeamInline,)
    rule_inlines = rule_inlines_for("organization")


@admin.register(Team)
class TeamAdmin(LevelRulesMixin, admin.ModelAdmin):
    list_display = ("name", "organization", "is_active", "created_at")
    list_filter = ("is_active", ("organization", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("organization",)
    search_fields = ("name", "organization__name")
    autocomplete_fields = ("organization",)
    inlines = (ProjectInline,)
    rule_inlines = rule_inlines_for("team")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        # str(team) names its organisation (autocomplete results, change page title).
        return super().get_queryset(request).select_related("organization")


@admin.register(Project)
class ProjectAdmin(LevelRulesMixin, admin.ModelAdmin):
    list_display = ("name", "team", "organization", "is_active", "created_at")
    list_filter = ("is_active", ("team__organization", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("team__organization",)
    search_fields = ("name", "team__name", "team__organization__name")
    autocomplete_fields = ("team",)
    inlines = (VirtualKeyInline,)
    rule_inlines = rule_inlines_for("project")

    @admin.display(description="organization", ordering="team__organization__name")
    def organization(self, obj: Project) -> str:
        return obj.team.organization.name

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        # str(project) names its team and organisation.
        return super().get_queryset(request).select_related("team__organization")
