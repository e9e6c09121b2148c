"""Every admin page is scoped: a ModelAdmin either takes the shared ``ScopedAdminMixin`` or
is on this short list of pages that scope themselves (each with its own tests)."""

from __future__ import annotations

from django.contrib import admin

from apps.identity.admin_scope import ScopedAdminMixin

#: label → why it may do without the mixin.
SCOPED_BY_HAND = {
    "portal.KeyLifetimeRule": "platform admins only (has_*_permission)",
    "sso.OidcProvider": "platform admins only (has_*_permission)",
    "sso.SignInEvent": "read-only, filtered by the audit capability's area",
}


def test_every_registered_admin_is_scoped():
    unscoped = sorted(
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, ScopedAdminMixin)
    )
    assert unscoped == sorted(SCOPED_BY_HAND), (
        "a new admin page without ScopedAdminMixin: scope it, or add it here with its reason"
    )
