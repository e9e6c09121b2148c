"""The admin, scoped to what each person administers.

Every ModelAdmin and inline of the project uses :class:`ScopedAdminMixin` (or
:class:`ScopedInlineMixin`): Django's model permissions no longer decide anything, the
person's memberships do (:func:`apps.identity.scope.scope_for`). A model admin says, as
class attributes, where its rows sit in the hierarchy (``scope_paths``) and which
capability reads and which writes them; the mixin then applies that one area to the list,
the object pages, the form choices, the list filters and the actions, so "a role covers its
subtree, never its parent or its siblings" holds on every admin page.

Who gets in at all: :func:`scoped_site_install` makes the admin open to active users whose
scope uses the admin (superuser / platform admin, org admin, team admin, finance, auditor).
``is_staff`` is neither needed nor enough: the login form and ``has_permission`` both ask
the memberships. A *member* is sent to the portal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MethodType
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from apps.identity.roles import Capability
from apps.identity.scope import Area, scope_for
from apps.keys.models import VirtualKey
from apps.tenancy.models import Organization, Project, Team

#: Lookup paths from a row to the ids of its organisation, team and project, keyed by the
#: ``Area.q`` argument they feed (``org``, ``team``, ``project``; a ``user`` level is one more
#: key once ``Area`` knows it). A model lists one mapping per way its rows can hang in the
#: hierarchy; a row is inside an area when any of them matches.
Paths = Mapping[str, str]

ORGANIZATION_PATHS: tuple[Paths, ...] = ({"org": "id"},)
TEAM_PATHS: tuple[Paths, ...] = ({"org": "organization_id", "team": "id"},)
PROJECT_PATHS: tuple[Paths, ...] = (
    {"org": "team__organization_id", "team": "team_id", "project": "id"},
)
KEY_PATHS: tuple[Paths, ...] = (
    {"org": "project__team__organization_id", "team": "project__team_id", "project": "project_id"},
)
#: Rows that carry all three ids themselves (the request log, usage roll-ups).
RECORD_PATHS: tuple[Paths, ...] = (
    {"org": "organization_id", "team": "team_id", "project": "project_id"},
)
#: Rows that belong to one organisation (or, with none, to the platform).
ORGANIZATION_ID_PATHS: tuple[Paths, ...] = ({"org": "organization_id"},)


def level_paths(prefix: str = "", *, levels: tuple[str, ...] | None = None) -> tuple[Paths, ...]:
    """Paths for rows attached to exactly one level (rules, memberships): a rule's area is
    its level's, so an org-level rule is only inside an org grant, never a team's."""
    all_levels: dict[str, Paths] = {
        "organization": {"org": f"{prefix}organization_id"},
        "team": {"org": f"{prefix}team__organization_id", "team": f"{prefix}team_id"},
        "project": {
            "org": f"{prefix}project__team__organization_id",
            "team": f"{prefix}project__team_id",
            "project": f"{prefix}project_id",
        },
        "key": {
            "org": f"{prefix}key__project__team__organization_id",
            "team": f"{prefix}key__project__team_id",
            "project": f"{prefix}key__project_id",
        },
    }
    return tuple(all_levels[name] for name in (levels or tuple(all_levels)))


RULE_PATHS = level_paths()

#: People someone may pick (a key's owner, a membership's user): those with a membership
#: inside the area.
USER_PATHS: tuple[Paths, ...] = level_paths(
    "memberships__", levels=("organization", "team", "project")
)

#: How to limit a foreign key's choices to an area, by the model it points at. Models not
#: listed (the platform catalog: models, providers, MCP servers) are offered to everyone.
CHOICE_PATHS: dict[type[models.Model], tuple[Paths, ...]] = {
    Organization: ORGANIZATION_PATHS,
    Team: TEAM_PATHS,
    Project: PROJECT_PATHS,
    VirtualKey: KEY_PATHS,
    get_user_model(): USER_PATHS,
}
DISTINCT_CHOICES: frozenset[type[models.Model]] = frozenset({get_user_model()})


def area_q(area: Area, paths: tuple[Paths, ...]) -> Q:
    """Rows inside ``area`` by any of ``paths`` (nothing when the area or paths are empty)."""
    if area.everything:
        return Q()
    condition = Q(pk__in=[])
    for mapping in paths:
        condition |= area.q(**mapping)
    return condition


def area_filter(
    queryset: QuerySet, area: Area, paths: tuple[Paths, ...], *, distinct: bool = False
) -> QuerySet:
    """``queryset`` limited to ``area`` (paths through a to-many relation need ``distinct``)."""
    if area.everything:
        return queryset
    if area.empty or not paths:
        return queryset.none()
    queryset = queryset.filter(area_q(area, paths))
    return queryset.distinct() if distinct else queryset


def area_reaches(area: Area, paths: tuple[Paths, ...]) -> bool:
    """Whether any row with these paths could be inside ``area`` (a team-level grant never
    reaches a model that only has organisation ids): such a model is hidden, not listed
    empty."""
    if area.everything:
        return True
    held = {"org": area.org_ids, "team": area.team_ids, "project": area.project_ids}
    return any(held.get(level) for mapping in paths for level in mapping)


def choices_for(model: type[models.Model], area: Area) -> QuerySet | None:
    """The rows of ``model`` someone with ``area`` may pick; None: not a hierarchy model."""
    paths = CHOICE_PATHS.get(model)
    if paths is None:
        return None
    queryset = model._default_manager.all()
    return area_filter(queryset, area, paths, distinct=model in DISTINCT_CHOICES)


# --- who gets into the admin ----------------------------------------------------------

NO_ADMIN_ROLE = (
    "This account has no administrative role. Members use the self-service portal at /portal/."
)


class RoleAuthenticationForm(AdminAuthenticationForm):
    """The admin login: any active account with an administrative role, staff or not."""

    def confirm_login_allowed(self, user: Any) -> None:
        AuthenticationForm.confirm_login_allowed(self, user)  # inactive accounts
        if not scope_for(user).uses_admin:
            raise ValidationError(NO_ADMIN_ROLE, code="no_admin_role")


def _has_permission(site: AdminSite, request: HttpRequest) -> bool:
    """Replaces ``AdminSite.has_permission`` (active + is_staff): active + an admin role."""
    return scope_for(request.user).uses_admin


def scoped_site_install(site: AdminSite) -> None:
    """Open ``site`` to role holders instead of staff (chosen over setting ``is_staff`` on
    membership saves: one rule, read from the memberships at each request, cannot drift
    from them when SSO or SCIM replaces a membership)."""
    site.login_form = RoleAuthenticationForm
    site.has_permission = MethodType(_has_permission, site)  # type: ignore[method-assign]


# --- the mixins -------------------------------------------------------------------------


def _limit_choices(db_field: models.Field, kwargs: dict[str, Any], area: Area) -> dict[str, Any]:
    if "queryset" not in kwargs:
        queryset = choices_for(db_field.related_model, area)
        if queryset is not None:
            kwargs["queryset"] = queryset
    return kwargs


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A related-object filter whose choices are only the objects the viewer may see
    (the stock one lists every organisation of the platform)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> list:
        queryset = choices_for(field.related_model, model_admin.scope_area(request))
        if queryset is None:
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        if ordering:
            queryset = queryset.order_by(*ordering)
        return [(obj.pk, str(obj)) for obj in queryset]


def _scoped_action(func: Callable, *, write: bool) -> Callable:
    """An admin action that only ever sees the selected rows inside the person's area
    (the one it may read for view-only actions, the one it may change otherwise)."""

    @functools.wraps(func)
    def action(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> Any:
        return func(modeladmin, request, modeladmin.scope_queryset(request, queryset, write=write))

    return action


class ScopedAdminMixin:
    """For a ModelAdmin: its rows, objects, choices, filters and actions limited to the
    viewer's area.

    * ``scope_paths``: where rows sit (see :data:`Paths`); ``()`` with ``platform_only``;
    * ``view_capability``: reads; ``None``: any administrative role (the platform catalog);
    * ``write_capability``: adds, changes, deletes; ``None``: platform admins only;
    * ``read_only``: nobody writes here from the admin (evidence, records);
    * ``platform_only``: platform admins only, reading included (users and groups);
    * ``container_paths``: the parent's area, needed to add or delete an object or to
      change ``identity_fields`` (a team admin edits its team's rules on the team page,
      but not the team's name, organisation or state).
    """

    scope_paths: tuple[Paths, ...] = ()
    view_capability: Capability | None = Capability.CONFIGURE
    write_capability: Capability | None = Capability.MANAGE
    read_only: bool = False
    platform_only: bool = False
    container_paths: tuple[Paths, ...] | None = None
    identity_fields: tuple[str, ...] = ()
    scope_distinct: bool = False

    # --- areas ---------------------------------------------------------------------------

    def scope_area(self, request: HttpRequest, *, write: bool = False) -> Area:
        """The part of the hierarchy this request may read (or write) on this model."""
        scope = scope_for(request.user)
        if scope.platform:
            return Area(everything=True)
        if self.platform_only or (write and (self.read_only or self.write_capability is None)):
            return Area()
        capability = self.write_capability if write else self.view_capability
        if capability is None:  # the catalog: read by every administrative role
            return Area(everything=True) if scope.uses_admin else Area()
        return scope.area(capability)

    def scope_queryset(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        *,
        write: bool = False,
        paths: tuple[Paths, ...] | None = None,
    ) -> QuerySet:
        area = self.scope_area(request, write=write)
        return area_filter(
            queryset,
            area,
            self.scope_paths if paths is None else paths,
            distinct=self.scope_distinct,
        )

    def scope_covers(
        self,
        request: HttpRequest,
        obj: models.Model,
        *,
        write: bool = False,
        paths: tuple[Paths, ...] | None = None,
    ) -> bool:
        """Whether a saved object is inside the area (asked of the database, so the answer
        is the same as the list's)."""
        area = self.scope_area(request, write=write)
        if area.everything:
            return True
        if obj.pk is None:
            return False
        base = type(obj)._default_manager.filter(pk=obj.pk)
        return self.scope_queryset(request, base, write=write, paths=paths).exists()

    def _reaches(self, request: HttpRequest, *, write: bool) -> bool:
        return area_reaches(self.scope_area(request, write=write), self.scope_paths)

    def _container(self) -> tuple[Paths, ...]:
        return self.scope_paths if self.container_paths is None else self.container_paths

    # --- permissions ---------------------------------------------------------------------

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        if obj is None:
            return self._reaches(request, write=False)
        return self.scope_covers(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # Where the new object goes is checked by its form's choices (the parent level).
        return area_reaches(self.scope_area(request, write=True), self._container())

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        if obj is None:
            return self._reaches(request, write=True)
        return self.scope_covers(request, obj, write=True)

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        if obj is None:
            return area_reaches(self.scope_area(request, write=True), self._container())
        return self.scope_covers(request, obj, write=True, paths=self._container())

    # --- pages ---------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return self.scope_queryset(request, super().get_queryset(request))  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is None or not self.identity_fields:
            return fields
        if self.scope_covers(request, obj, write=True, paths=self._container()):
            return fields
        return (*fields, *(f for f in self.identity_fields if f not in fields))

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        kwargs = _limit_choices(db_field, kwargs, self.scope_area(request, write=True))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(
        self, db_field: models.ManyToManyField, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        kwargs = _limit_choices(db_field, kwargs, self.scope_area(request, write=True))
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]

    def get_autocomplete_fields(self, request: HttpRequest) -> Any:
        """Autocomplete reads the related model's admin; a field whose model the person may
        not list (users, for anyone but a platform admin) becomes a plain select of the
        limited choices instead."""
        fields = super().get_autocomplete_fields(request)  # type: ignore[misc]
        registry = self.admin_site._registry  # type: ignore[attr-defined]
        kept = []
        for name in fields:
            related = self.model._meta.get_field(name).related_model  # type: ignore[attr-defined]
            related_admin = registry.get(related)
            if related_admin is not None and related_admin.has_view_permission(request):
                kept.append(name)
        return kept

    def get_list_filter(self, request: HttpRequest) -> Any:
        """Related-object filters list only the objects in the viewer's area."""
        result = []
        for entry in super().get_list_filter(request):  # type: ignore[misc]
            if isinstance(entry, str):
                name, spec = entry, None
            elif isinstance(entry, tuple):
                name, spec = entry
            else:
                result.append(entry)
                continue
            if isinstance(name, str) and spec in (None, admin.RelatedFieldListFilter):
                field = _final_field(self.model, name)  # type: ignore[attr-defined]
                if field is not None and field.related_model in CHOICE_PATHS:
                    result.append((name, ScopedRelatedFieldListFilter))
                    continue
            result.append(entry)
        return result

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        scoped = {}
        for name, (func, action_name, description) in actions.items():
            allowed = getattr(func, "allowed_permissions", ())
            write = not (allowed and set(allowed) <= {"view"})
            scoped[name] = (_scoped_action(func, write=write), action_name, description)
        return scoped


def _final_field(model: type[models.Model], path: str) -> models.Field | None:
    """The field a ``list_filter`` path ends on (None if it is not a plain field path)."""
    field = None
    for part in path.split("__"):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:  # not a field path (a callable's name, a lookup)
            return None
        if field.related_model is not None:
            model = field.related_model
    return field if getattr(field, "is_relation", False) else None


class ScopedInlineMixin:
    """For an inline: on the parent's page it may do what the parent's admin allows on the
    parent (its rows are the parent's children, inside the parent's subtree), and its
    choices are limited like the parent's."""

    def _parent_admin(self) -> Any:
        return self.admin_site._registry.get(self.parent_model)  # type: ignore[attr-defined]

    def _parent_may(self, request: HttpRequest, obj: models.Model | None, *, write: bool) -> bool:
        parent = self._parent_admin()
        if parent is None:
            return scope_for(request.user).platform
        if write:
            return parent.has_change_permission(request, obj)
        return parent.has_view_permission(request, obj)

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_may(request, obj, write=False)

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_may(request, obj, write=True)

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_may(request, obj, write=True)

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_may(request, obj, write=True)

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        parent = self._parent_admin()
        if parent is not None and hasattr(parent, "scope_area"):
            kwargs = _limit_choices(db_field, kwargs, parent.scope_area(request, write=True))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]
