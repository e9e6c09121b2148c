"""Any change to the governance models bumps the config version and is written to the
change log (``apps.configlog``) in its own transaction, naming what it touches, so each
gateway process updates only those parts of its snapshot."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from apps.configlog.models import Scope
from apps.configlog.services import config_change_record
from apps.core.models import config_version_bump

# Level field of a scoped rule -> the scope of the keys it governs.
_LEVEL_SCOPES = (
    ("organization_id", Scope.ORG),
    ("team_id", Scope.TEAM),
    ("project_id", Scope.PROJECT),
    ("key_id", Scope.KEY),
    ("user_id", Scope.USER),
)


def _rule_scope(instance) -> tuple[str, int | None]:
    for attr, scope in _LEVEL_SCOPES:
        level_id = getattr(instance, attr, None)
        if level_id is not None:
            return scope, level_id
    return Scope.NONE, None


def change_scope(instance) -> tuple[str, int | None]:
    """What of the snapshot a saved or deleted row touches."""
    label = instance._meta.label
    if label == "keys.VirtualKey":
        return Scope.KEY, instance.pk
    if label == "tenancy.Project":
        return Scope.PROJECT, instance.pk
    if label == "tenancy.Team":
        return Scope.TEAM, instance.pk
    if label == "tenancy.Organization":
        return Scope.ORG, instance.pk
    if instance._meta.label == settings.AUTH_USER_MODEL:
        return Scope.USER, instance.pk  # deleted: their keys lose their owner
    if label == "providers.Model":
        return Scope.MODEL, instance.pk
    if label in ("providers.Provider", "providers.Deployment", "providers.ModelFallback"):
        return Scope.MODELS, None
    if label == "policies.EndUserPolicy":
        return Scope.ORG, instance.organization_id
    if instance._meta.app_config.name == "apps.mcp":
        return Scope.NONE, None  # the MCP policy reloads on the config version
    if hasattr(instance, "organization_id") and hasattr(instance, "key_id"):
        return _rule_scope(instance)  # budgets, limits, access, tags, aliases, guardrails…
    return Scope.ALL, None


def _record(instance) -> None:
    scope, object_id = change_scope(instance)
    config_change_record(scope=scope, object_id=object_id, source=instance._meta.label)
    config_version_bump()


def _saved(sender, instance, **_kwargs) -> None:
    _record(instance)


def _deleted(sender, instance, **_kwargs) -> None:
    _record(instance)


def _before_save(sender, instance, **_kwargs) -> None:
    """A rule moved to another level also changes the keys of the level it left."""
    if instance.pk is None or not hasattr(instance, "key_id"):
        return
    fields = [attr for attr, _scope in _LEVEL_SCOPES if hasattr(instance, attr)]
    old = sender._default_manager.filter(pk=instance.pk).values(*fields).first()
    if old is None:
        return
    if any(old[f] != getattr(instance, f) for f in fields):
        scope, level_id = next(
            ((s, old[a]) for a, s in _LEVEL_SCOPES if old.get(a) is not None),
            (Scope.NONE, None),
        )
        config_change_record(scope=scope, object_id=level_id, source=instance._meta.label)


def _m2m(**_kwargs) -> None:
    # Only SCIM group membership today: not compiled into the gateway snapshot.
    config_change_record(scope=Scope.NONE, object_id=None, source="m2m")
    config_version_bump()


def connect_config_signals() -> None:
    from apps.audit.models import ContentCapture
    from apps.guardrails.models import GuardrailRule
    from apps.keys.models import VirtualKey
    from apps.mcp.models import McpServer, McpTool, ToolGrant
    from apps.policies.models import (
        Budget,
        DeploymentTagRule,
        EndUserPolicy,
        ModelAccess,
        ModelAlias,
        RateLimit,
    )
    from apps.providers.models import Deployment, Model, ModelFallback, Provider
    from apps.tenancy.models import Organization, Project, Team

    rules = (
        Budget,
        RateLimit,
        ModelAccess,
        DeploymentTagRule,
        ModelAlias,
        ContentCapture,
        GuardrailRule,
    )
    for model in (
        Organization,
        Team,
        Project,
        VirtualKey,
        Provider,
        Model,
        Deployment,
        ModelFallback,
        EndUserPolicy,
        McpServer,
        McpTool,
        ToolGrant,
        *rules,
    ):
        uid = f"odock-config-{model._meta.label}"
        post_save.connect(_saved, sender=model, dispatch_uid=f"{uid}-save", weak=False)
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{uid}-delete", weak=False)
    for model in rules:
        uid = f"odock-config-{model._meta.label}-moved"
        pre_save.connect(_before_save, sender=model, dispatch_uid=uid, weak=False)
    m2m_changed.connect(_m2m, dispatch_uid="odock-config-m2m", weak=False)
    post_delete.connect(
        _deleted, sender=get_user_model(), dispatch_uid="odock-config-user-delete", weak=False
    )
