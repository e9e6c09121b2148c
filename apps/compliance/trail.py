"""The change trail: signal receivers that write a ``ConfigChange`` for every create,
update and delete of a governance model, in the same transaction as the change.

``pre_save`` reads the stored row (the "before"), ``post_save`` diffs it against what was
saved; ``pre_delete`` takes the snapshot while related rows still exist (a cascade deletes
children first) and ``post_delete`` records it once the row is gone. An update that
changes nothing (``odock_apply`` re-applying the same file) leaves no row. Bulk
``QuerySet.update()`` sends no signals; only the gateway uses it, for ``last_used_at``.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from apps.compliance.context import change_context, role_at
from apps.compliance.models import ChangeAction, ConfigChange
from apps.core.fields import EncryptedTextField
from apps.core.secrets import changed_at_names

SECRET_NAME = re.compile(r"secret|api_key|digest|token", re.IGNORECASE)
SECRET_CHANGED = "changed"  # noqa: S105 - the marker that replaces a secret
# Written by the gateway (by QuerySet.update, which sends no signal); listed in case code
# ever saves it through the model: usage is not configuration.
IGNORED_FIELDS = frozenset({"last_used_at"})
_BEFORE = "_odock_trail_before"
_DELETED = "_odock_trail_deleted"


def tracked_models() -> tuple[type[models.Model], ...]:
    """The governance models: the same set whose changes bump the config version
    (``apps.policies.signals``), plus the audit content-capture rules and who may
    administer (memberships, single sign-on and SCIM set-up, key lifetimes)."""
    from apps.api.models import AdminToken
    from apps.audit.models import ContentCapture
    from apps.guardrails.models import GuardrailRule
    from apps.identity.models import Membership
    from apps.keys.models import VirtualKey
    from apps.policies.models import (
        Budget,
        DeploymentTagRule,
        ModelAccess,
        ModelAlias,
        RateLimit,
    )
    from apps.portal.models import KeyLifetimeRule
    from apps.providers.models import Deployment, Model, ModelFallback, Provider
    from apps.scim.models import ScimGroup, ScimSettings, ScimToken
    from apps.sso.models import GroupMapping, OidcProvider
    from apps.tenancy.models import Organization, Project, Team

    return (
        Organization,
        Team,
        Project,
        VirtualKey,
        Provider,
        Model,
        ModelFallback,
        Deployment,
        Budget,
        RateLimit,
        ModelAccess,
        DeploymentTagRule,
        ModelAlias,
        ContentCapture,
        GuardrailRule,
        AdminToken,  # who may change all of the above through the API
        # Who may administer, and how people get their roles (issue 15).
        Membership,
        OidcProvider,
        GroupMapping,
        ScimSettings,
        ScimToken,
        ScimGroup,
        KeyLifetimeRule,
    )


def is_secret(field: models.Field) -> bool:
    return isinstance(field, EncryptedTextField) or bool(SECRET_NAME.search(field.name))


def _fields(model: type[models.Model]) -> list[models.Field]:
    """What the trail compares: not usage, and not a secret's ``*_changed_at`` (the
    secret's own "changed" entry, and the row's time, already say it)."""
    skipped = IGNORED_FIELDS | changed_at_names(model)
    return [f for f in model._meta.concrete_fields if f.name not in skipped]


def _normal(field: models.Field, value: Any) -> Any:
    """Python's own type for the field, so "10" and Decimal("10.000000") compare equal
    (and money keeps the column's decimal places in the trail, as stored)."""
    try:
        value = field.to_python(value)
    except (ValidationError, TypeError, ValueError):
        return value
    if isinstance(field, models.DecimalField) and isinstance(value, Decimal):
        try:
            return value.quantize(Decimal(1).scaleb(-field.decimal_places))
        except InvalidOperation:
            return value
    return value


def json_value(value: Any) -> Any:
    """A JSON-safe copy: money as a decimal string, times as ISO 8601."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    return str(value)


def _snapshot(instance: models.Model) -> dict[str, Any]:
    return {f.name: _normal(f, f.value_from_object(instance)) for f in _fields(type(instance))}


def _stored(instance: models.Model) -> dict[str, Any] | None:
    """The row as the database has it now (secrets decrypted by their field), or None."""
    fields = _fields(type(instance))
    row = (
        type(instance)
        ._base_manager.filter(pk=instance.pk)
        .values(*[f.attname for f in fields])
        .first()
    )
    if row is None:
        return None
    return {f.name: _normal(f, row[f.attname]) for f in fields}


def field_changes(
    model: type[models.Model],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    only: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Field → {"before", "after"} for each field that differs; a secret only as
    "changed". A create has no before, a delete no after (empty values left out)."""
    changes: dict[str, Any] = {}
    for field in _fields(model):
        if field.primary_key:
            continue  # it is the change's object_id
        if only is not None and field.name not in only and field.attname not in only:
            continue
        old = before.get(field.name) if before is not None else None
        new = after.get(field.name) if after is not None else None
        if before is not None and after is not None:
            if old == new:
                continue
        elif old in (None, "") and new in (None, ""):
            continue
        if is_secret(field):
            changes[field.name] = SECRET_CHANGED
        else:
            changes[field.name] = {"before": json_value(old), "after": json_value(new)}
    return changes


def organization_of(instance: models.Model) -> int | None:
    """The organisation an object belongs to, walking key → project → team; None for
    platform-wide objects (providers, models, deployments)."""
    from apps.tenancy.models import Organization

    if isinstance(instance, Organization):
        return instance.pk
    if getattr(instance, "organization_id", None) is not None:
        return instance.organization_id
    for parent in ("team", "project", "key", "provider"):  # provider: an SSO mapping's
        if getattr(instance, f"{parent}_id", None) is not None:
            return organization_of(getattr(instance, parent))
    return None


def levels_of(instance: models.Model) -> tuple[int | None, int | None, int | None]:
    """(organisation, team, project) ids of an object — each None where it has no such
    level — so the trail can be scoped like the request log and a person's role read at
    the object's level."""
    from apps.tenancy.models import Organization, Project, Team

    if isinstance(instance, Organization):
        return instance.pk, None, None
    if isinstance(instance, Team):
        return instance.organization_id, instance.pk, None
    if isinstance(instance, Project):
        return organization_of(instance), instance.team_id, instance.pk
    for parent in ("project", "team", "key"):
        if getattr(instance, f"{parent}_id", None) is not None:
            org_id, team_id, project_id = levels_of(getattr(instance, parent))
            return org_id, team_id, project_id
    return organization_of(instance), None, None


def _repr(instance: models.Model) -> str:
    try:
        text = str(instance)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        text = f"{instance._meta.label} #{instance.pk}"
    return text[:200]


def config_change_record(
    *,
    instance: models.Model,
    action: str,
    changes: dict[str, Any],
    object_id: Any = None,
    object_repr: str | None = None,
    organization_id: int | None = None,
    levels: tuple[int | None, int | None, int | None] | None = None,
) -> ConfigChange:
    """One row of the trail, attributed to the current change context: the person or
    token, and the role behind the change."""
    context = change_context()
    actor = context.resolve_actor()
    _, team_id, project_id = levels if levels is not None else (organization_id, None, None)
    role = actor.role
    if role is None:
        role = role_at(
            actor.user_id,
            organization_id=organization_id,
            team_id=team_id,
            project_id=project_id,
        )
    return ConfigChange.objects.create(
        actor=actor.name[:200],
        actor_user_id=actor.user_id,
        actor_role=role[:300],
        team_id=team_id,
        project_id=project_id,
        action=action,
        object_type=instance._meta.label_lower,
        object_id=str(instance.pk if object_id is None else object_id)[:64],
        object_repr=object_repr if object_repr is not None else _repr(instance),
        organization_id=organization_id,
        changes=changes,
        request_id=context.request_id,
        client_ip=context.client_ip,
    )


# --- receivers -----------------------------------------------------------------------------


def _pre_save(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    adding = instance._state.adding or instance.pk is None
    setattr(instance, _BEFORE, None if adding else _stored(instance))


def _post_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    after = _snapshot(instance)
    if created or before is None:
        action, changes = ChangeAction.CREATE, field_changes(sender, None, after)
    else:
        changes = field_changes(sender, before, after, update_fields)
        if not changes:
            return
        action = ChangeAction.UPDATE
    levels = levels_of(instance)
    config_change_record(
        instance=instance,
        action=action,
        changes=changes,
        organization_id=levels[0],
        levels=levels,
    )


def _pre_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    setattr(
        instance,
        _DELETED,
        {
            "object_id": instance.pk,
            "object_repr": _repr(instance),
            "organization_id": organization_of(instance),
            "levels": levels_of(instance),
            "before": _snapshot(instance),
        },
    )


def _post_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    deleted = instance.__dict__.pop(_DELETED, None)
    if deleted is None:  # no pre_delete (cannot happen through Model/QuerySet.delete)
        deleted = {
            "object_id": instance.pk,
            "object_repr": _repr(instance),
            "organization_id": None,
            "before": _snapshot(instance),
        }
    config_change_record(
        instance=instance,
        action=ChangeAction.DELETE,
        changes=field_changes(sender, deleted["before"], None),
        object_id=deleted["object_id"],
        object_repr=deleted["object_repr"],
        organization_id=deleted["organization_id"],
        levels=deleted.get("levels"),
    )


def connect_trail_signals() -> None:
    for model in tracked_models():
        uid = f"odock-trail-{model._meta.label}"
        pre_save.connect(_pre_save, sender=model, dispatch_uid=f"{uid}-pre-save", weak=False)
        post_save.connect(_post_save, sender=model, dispatch_uid=f"{uid}-save", weak=False)
        pre_delete.connect(_pre_delete, sender=model, dispatch_uid=f"{uid}-pre-delete", weak=False)
        post_delete.connect(_post_delete, sender=model, dispatch_uid=f"{uid}-delete", weak=False)
