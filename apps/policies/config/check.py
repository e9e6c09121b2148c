"""Checks of meaning ``odock_apply`` runs before writing anything: references to providers,
models and MCP servers (in the file or already in the database), duplicate names, key
secrets, environment variables and the models' own field rules. Every problem is one
``path: message`` line naming the place in the file, e.g.
``organizations[0].teams[1].models[2]: unknown model 'gpt-5'``.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from apps.keys.services import key_secret_validate
from apps.mcp.policy import SEPARATOR
from apps.mcp.selectors import mcp_servers_by_name
from apps.mcp.services import mcp_url_validate
from apps.policies.config.schema import (
    AlertsSpec,
    ConfigFile,
    KeySpec,
    LevelEntry,
    LevelSpec,
    McpServerSpec,
    OrganizationSpec,
    ProjectSpec,
    TeamSpec,
    config_levels,
    config_users,
)
from apps.providers.selectors import models_by_name, providers_by_name
from apps.providers.services import provider_field_validate, provider_options_validate
from apps.tenancy.services import organization_field_max_length


def email_text(emails: list[str]) -> str:
    """How ``Organization.alert_emails`` stores a list (the alert sender splits on commas)."""
    return ", ".join(emails)


def _duplicates(errors: list[str], path: str, names: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for i, name in enumerate(names):
        if name in seen:
            errors.append(f"{path}[{i}]: duplicate {what} {name!r}")
        seen.add(name)


def _check_level_rules(
    errors: list[str], entry: LevelEntry, known_models: set[str], known_servers: set[str]
) -> None:
    spec, path = entry.spec, entry.path

    def check_model(where: str, name: str | None) -> None:
        if name is not None and name not in known_models:
            errors.append(f"{where}: unknown model {name!r}")

    budgets = spec.budget_list()
    for suffix, budget in budgets:
        check_model(f"{path}.{suffix}.model", budget.model)
    _duplicates(
        errors,
        f"{path}.budgets",
        [(b.model or "all models", b.period.value) for _s, b in budgets],
        "budget (model, period)",
    )
    limits = spec.rate_limit_list()
    for suffix, limit in limits:
        check_model(f"{path}.{suffix}.model", limit.model)
    _duplicates(
        errors, f"{path}.rate_limits", [limit.model for _s, limit in limits], "rate limit for model"
    )
    for i, name in enumerate(spec.models):
        check_model(f"{path}.models[{i}]", name)
    _duplicates(errors, f"{path}.models", spec.models, "model")
    if not isinstance(spec, LevelSpec):
        return  # a person carries budgets, rate limits and model access only
    _duplicates(
        errors,
        f"{path}.guardrails",
        [(g.detector.value, g.name) for g in spec.guardrails],
        "guardrail (detector, name)",
    )
    for alias, target in spec.model_aliases.items():
        where = f"{path}.model_aliases.{alias}"
        check_model(where, target)
        if alias in known_models:
            errors.append(f"{where}: {alias!r} is a model's own name; an alias may not shadow it")
    for i, grant in enumerate(spec.tools):
        if grant.server not in known_servers:
            errors.append(f"{path}.tools[{i}].server: unknown MCP server {grant.server!r}")
    _duplicates(
        errors,
        f"{path}.tools",
        [(g.server, g.tool) for g in spec.tools],
        "tool grant (server, tool)",
    )


def _check_people(errors: list[str], config: ConfigFile) -> None:
    """People are named, never created, by the file: each must exist already."""
    named = {u.username: f"users[{i}].username" for i, u in enumerate(config.users)}
    _duplicates(errors, "users", [u.username for u in config.users], "user")
    for entry in config_levels(config):
        if isinstance(entry.spec, KeySpec) and entry.spec.owner is not None:
            named.setdefault(entry.spec.owner, f"{entry.path}.owner")
        if isinstance(entry.spec, OrganizationSpec) and entry.spec.end_users:
            _duplicates(
                errors,
                f"{entry.path}.end_users",
                [p.end_user for p in entry.spec.end_users],
                "end-user policy",
            )
    user_model = get_user_model()
    existing = set(
        user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": list(named)}).values_list(
            user_model.USERNAME_FIELD, flat=True
        )
    )
    for username, where in named.items():
        if username not in existing:
            errors.append(f"{where}: unknown user {username!r}")


def _check_mcp_servers(errors: list[str], servers: list[McpServerSpec]) -> None:
    _duplicates(errors, "mcp_servers", [s.name for s in servers], "MCP server")
    for i, server in enumerate(servers):
        path = f"mcp_servers[{i}]"
        if SEPARATOR in server.name:
            errors.append(f"{path}.name: a server name may not contain {SEPARATOR!r}")
        if server.url is not None:
            try:  # the model field's own rules (URL syntax, length)
                mcp_url_validate(url=server.url)
            except ValidationError as exc:
                errors.extend(f"{path}.url: {m}" for m in exc.messages)
        if server.bearer_token_env is not None and not os.environ.get(server.bearer_token_env):
            errors.append(f"{path}.bearer_token_env: {server.bearer_token_env} is not set")
        for header, env in (server.headers_env or {}).items():
            if not os.environ.get(env):
                errors.append(f"{path}.headers_env.{header}: {env} is not set")
        for name, env in (server.environment_env or {}).items():
            if not os.environ.get(env):
                errors.append(f"{path}.environment_env.{name}: {env} is not set")
        _duplicates(errors, f"{path}.tools", [t.name for t in server.tools], "tool")


def _check_alerts(errors: list[str], path: str, alerts: AlertsSpec | None) -> None:
    if alerts is None:
        return
    env = alerts.webhook_secret_env
    if env is not None and not os.environ.get(env):
        errors.append(f"{path}.webhook_secret_env: {env} is not set")
    if alerts.emails is not None:
        _duplicates(errors, f"{path}.emails", alerts.emails, "address")
        limit = organization_field_max_length(name="alert_emails")
        if limit is not None and len(email_text(alerts.emails)) > limit:
            errors.append(f"{path}.emails: longer than {limit} characters in all")


def config_check(config: ConfigFile) -> list[str]:
    """Errors of meaning, each as ``path: message``; references may name rows already in
    the database as well as ones in the file."""
    errors: list[str] = []
    known_providers = {p.name for p in config.providers} | set(providers_by_name())
    known_models = {m.name for m in config.models} | set(models_by_name())
    _duplicates(errors, "providers", [p.name for p in config.providers], "provider")
    for i, provider in enumerate(config.providers):
        try:  # the model field's own rules (URL syntax, length)
            provider_field_validate(name="api_base", value=provider.api_base)
        except ValidationError as exc:
            errors.extend(f"providers[{i}].api_base: {m}" for m in exc.messages)
        if provider.options is not None:
            try:  # the same check as the admin's and the API's
                provider_options_validate(kind=provider.kind.value, options=provider.options)
            except ValidationError as exc:
                errors.extend(f"providers[{i}].options: {m}" for m in exc.messages)
        if provider.api_key_env is not None and not os.environ.get(provider.api_key_env):
            errors.append(f"providers[{i}].api_key_env: {provider.api_key_env} is not set")
    _duplicates(errors, "models", [m.name for m in config.models], "model")
    for i, model in enumerate(config.models):
        for j, deployment in enumerate(model.deployments):
            if deployment.provider not in known_providers:
                where = f"models[{i}].deployments[{j}].provider"
                errors.append(f"{where}: unknown provider {deployment.provider!r}")
        _duplicates(
            errors,
            f"models[{i}].deployments",
            [(d.provider, d.model) for d in model.deployments],
            "deployment",
        )
        if model.routing is not None:
            where = f"models[{i}].routing.fallback_models"
            for j, name in enumerate(model.routing.fallback_models):
                if name == model.name:
                    errors.append(f"{where}[{j}]: a model cannot be its own fallback")
                elif name not in known_models:
                    errors.append(f"{where}[{j}]: unknown model {name!r}")
            _duplicates(errors, where, model.routing.fallback_models, "model")
    _check_mcp_servers(errors, config.mcp_servers)
    known_servers = {s.name for s in config.mcp_servers} | set(mcp_servers_by_name())
    _duplicates(errors, "organizations", [o.name for o in config.organizations], "organization")
    for i, org in enumerate(config.organizations):
        _check_alerts(errors, f"organizations[{i}].alerts", org.alerts)
    _check_people(errors, config)
    secrets: dict[str, str] = {}
    for entry in [*config_levels(config), *config_users(config)]:
        _check_level_rules(errors, entry, known_models, known_servers)
        if isinstance(entry.spec, OrganizationSpec):
            _duplicates(errors, f"{entry.path}.teams", [t.name for t in entry.spec.teams], "team")
        elif isinstance(entry.spec, TeamSpec):
            _duplicates(
                errors, f"{entry.path}.projects", [p.name for p in entry.spec.projects], "project"
            )
        elif isinstance(entry.spec, ProjectSpec):
            _duplicates(errors, f"{entry.path}.keys", [k.name for k in entry.spec.keys], "key")
        elif isinstance(entry.spec, KeySpec) and entry.spec.secret is not None:
            secret = entry.spec.secret.get_secret_value()
            try:
                key_secret_validate(secret=secret)  # the service's own rule
            except ValueError as exc:
                errors.append(f"{entry.path}.secret: {exc}")
            if secret in secrets:
                errors.append(f"{entry.path}.secret: same secret as {secrets[secret]}")
            secrets.setdefault(secret, entry.path)
    return errors


def config_warnings(config: ConfigFile) -> list[str]:
    """Nothing the file can say is ignored today; kept for the report's warning lines."""
    return []
