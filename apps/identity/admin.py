"""Admin for memberships, the scoped admin site, and users and groups for platform admins.

Importing this module (Django's admin autodiscovery does) opens the admin to role holders
(:func:`apps.identity.admin_scope.scoped_site_install`). Org and team admins manage people
through memberships: they grant only the roles their own role may grant
(``GRANTABLE``), at levels inside what they administer.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from apps.identity.admin_scope import (
    USER_PATHS,
    ScopedAdminMixin,
    ScopedInlineMixin,
    area_filter,
    level_paths,
    scoped_site_install,
)
from apps.identity.grants import grant_refusal, grant_target
from apps.identity.models import Membership
from apps.identity.roles import Capability
from apps.identity.scope import forget_scope, scope_for

scoped_site_install(admin.site)

User = get_user_model()
MEMBERSHIP_PATHS = level_paths(levels=("organization", "team", "project"))


class MembershipForm(forms.ModelForm):
    """Refuses a grant above the granter's role or outside their subtree, saying why."""

    request: HttpRequest | None = None  # set by MembershipAdmin.get_form

    class Meta:
        model = Membership
        fields = ("user", "role", "organization", "team", "project")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.request is None or self.errors or not cleaned.get("role"):
            return cleaned
        target = grant_target(
            organization=cleaned.get("organization"),
            team=cleaned.get("team"),
            project=cleaned.get("project"),
        )
        refusal = grant_refusal(scope_for(self.request.user), role=cleaned["role"], target=target)
        if refusal is not None:
            raise ValidationError(refusal, code="not_grantable")
        return cleaned


def _stored_refusal(request: HttpRequest, obj: Membership) -> str | None:
    target = grant_target(organization=obj.organization, team=obj.team, project=obj.project)
    return grant_refusal(scope_for(request.user), role=obj.role, target=target)


@admin.register(Membership)
class MembershipAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Memberships inside the person's ``members`` area; one they could not have granted
    (a role above theirs) is shown read-only."""

    form = MembershipForm
    scope_paths = MEMBERSHIP_PATHS
    view_capability = Capability.MEMBERS
    write_capability = Capability.MEMBERS
    list_display = ("user", "role", "level", "source", "created_at")
    list_filter = ("role", "source")
    list_select_related = ("user", "organization", "team__organization", "project__team")
    search_fields = ("user__username", "user__email")
    search_help_text = "Username or email."
    readonly_fields = ("source", "created_at")

    @admin.display(description="level")
    def level(self, obj: Membership) -> str:
        return obj.level

    def get_form(self, request: HttpRequest, obj: Membership | None = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not scope_for(request.user).platform:
            # People already in the area, and people not in any organisation yet (e.g.
            # signed in through SSO with no group mapped): never another organisation's.
            area = self.scope_area(request, write=True)
            members = area_filter(User.objects.all(), area, USER_PATHS)
            kwargs["queryset"] = User.objects.filter(
                Q(pk__in=members.values("pk")) | Q(memberships__isnull=True, is_superuser=False)
            ).distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Membership | None = None) -> bool:
        if obj is None or not super().has_change_permission(request, obj):
            return super().has_change_permission(request, obj)
        return _stored_refusal(request, obj) is None

    def has_delete_permission(self, request: HttpRequest, obj: Membership | None = None) -> bool:
        if obj is None or not super().has_delete_permission(request, obj):
            return super().has_delete_permission(request, obj)
        return _stored_refusal(request, obj) is None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related(*self.list_select_related)

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        forget_scope(obj.user)


class MembershipInline(ScopedInlineMixin, admin.TabularInline):
    """A user's memberships on their page (the user page is a platform admin's)."""

    model = Membership
    fields = ("role", "organization", "team", "project", "source")
    autocomplete_fields = ("organization", "team", "project")
    extra = 0


class PlatformOnlyMixin(ScopedAdminMixin):
    """Django's own users and groups: platform admins only. Org admins manage people
    through memberships."""

    platform_only = True

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return scope_for(request.user).platform

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return scope_for(request.user).platform

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return scope_for(request.user).platform

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return scope_for(request.user).platform


for model in (User, Group):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(User)
class PlatformUserAdmin(PlatformOnlyMixin, UserAdmin):
    inlines = (*UserAdmin.inlines, MembershipInline)


@admin.register(Group)
class PlatformGroupAdmin(PlatformOnlyMixin, GroupAdmin):
    pass
