"""Any change to the governance models bumps the config version (gateways then reload)."""

from __future__ import annotations

from django.db.models.signals import m2m_changed, post_delete, post_save

from apps.core.models import config_version_bump


def _bump(**_kwargs) -> None:
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

    for model in (
        Organization,
        Team,
        Project,
        VirtualKey,
        Provider,
        Model,
        Deployment,
        Budget,
        RateLimit,
        ModelAccess,
        ModelFallback,
        DeploymentTagRule,
        ModelAlias,
        EndUserPolicy,
        ContentCapture,
        GuardrailRule,
        McpServer,
        McpTool,
        ToolGrant,
    ):
        uid = f"odock-config-{model._meta.label}"
        post_save.connect(_bump, sender=model, dispatch_uid=f"{uid}-save", weak=False)
        post_delete.connect(_bump, sender=model, dispatch_uid=f"{uid}-delete", weak=False)
    m2m_changed.connect(_bump, dispatch_uid="odock-config-m2m", weak=False)
