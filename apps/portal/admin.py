"""The portal's key lifetime rules in the admin: platform admins only for now (the rows
name organisations and teams, so scoping them to a subtree comes with the admin's
scoping work)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.identity.scope import scope_for
from apps.portal.models import KeyLifetimeRule


@admin.register(KeyLifetimeRule)
class KeyLifetimeRuleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "organization", "team", "max_key_lifetime_days")
    list_select_related = ("organization", "team__organization")
    raw_id_fields = ("organization", "team")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return scope_for(request.user).platform

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return scope_for(request.user).platform

    def has_add_permission(self, request: HttpRequest) -> bool:
        return scope_for(request.user).platform

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return scope_for(request.user).platform

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return scope_for(request.user).platform
