"""Applying a checked ``ConfigFile``: idempotent, in one transaction, through the apps'
services only (the same ones the admin and the management API call), so validation and the
change trail do not depend on the door a change came through.

This module translates the file's specs into service arguments, names each service's
``ValidationError`` by its path in the file, and collects the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models, transaction
from pydantic import SecretStr

from apps.core.services import RowInvalid, Saved, SyncResult
from apps.keys.selectors import key_get_by_name
from apps.keys.services import key_issue, key_revoke, key_update
from apps.mcp.policy import SEPARATOR
from apps.mcp.selectors import mcp_server_get_by_name, mcp_servers_by_name
from apps.mcp.services import mcp_server_upsert, mcp_tools_sync
from apps.policies.config.check import config_check, config_warnings, email_text
from apps.policies.config.schema import (
    AlertsSpec,
    ConfigError,
    ConfigFile,
    KeySpec,
    LevelEntry,
    LevelSpec,
    LimitsSpec,
    McpServerSpec,
    ModelSpec,
    OrganizationSpec,
    ProviderSpec,
    TeamSpec,
    config_levels,
    config_users,
)
from apps.policies.end_users import end_user_policies_sync
from apps.policies.services import RuleSpec, scoped_rules_sync
from apps.providers.selectors import models_by_name, providers_by_name
from apps.providers.services import (
    deployments_sync,
    model_fallbacks_sync,
    model_upsert,
    provider_upsert,
)
from apps.sso.config import SsoConfigError, sso_apply
from apps.sso.models import OidcProvider
from apps.tenancy.selectors import organization_get_by_name
from apps.tenancy.services import organization_upsert, project_upsert, team_upsert


@dataclass
class ApplyResult(SyncResult):
    warnings: list[str] = field(default_factory=list)
    # (key path, secret) of generated keys: printed once, never stored.
    issued: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def summary(self) -> str:
        counts = (
            f"created {len(self.created)}, updated {len(self.updated)}, "
            f"deleted {len(self.deleted)}, unchanged {self.unchanged}"
        )
        return counts if self.changed else f"no changes: {counts}"


@contextmanager
def _errors_at(path: str) -> Iterator[None]:
    """Turn a service's ValidationError into ConfigError lines under the file's path."""
    try:
        yield
    except ValidationError as exc:
        raise ConfigError(_error_lines(path, exc)) from None


def _error_lines(path: str, exc: ValidationError) -> list[str]:
    if not hasattr(exc, "error_dict"):
        return [f"{path}: {m}" for m in exc.messages]
    lines = []
    for name, messages in exc.message_dict.items():
        if name == "digest":  # the only unique digest clash: a secret already in use
            lines.append(f"{path}.secret: this secret is already used by another key")
            continue
        where = path if name == "__all__" else f"{path}.{name}"
        lines.extend(f"{where}: {m}" for m in messages)
    return lines


@contextmanager
def _rows_at(paths: list[str]) -> Iterator[None]:
    """A synced list's failing row, named by its own path in the file."""
    try:
        yield
    except RowInvalid as exc:
        raise ConfigError(_error_lines(paths[exc.index], exc.error)) from None


def user_get_by_username(username: str) -> models.Model:
    """A person the file names (``config_check`` has made sure they exist)."""
    return get_user_model().objects.get_by_natural_key(username)


class _Applier:
    """Applies a checked ConfigFile; one instance per run, inside one transaction."""

    def __init__(self, result: ApplyResult) -> None:
        self.result = result
        self.providers: dict[str, models.Model] = {}
        self.models: dict[str, models.Model] = {}
        self.levels: dict[tuple[str, ...], models.Model] = {}
        self.mcp_servers: dict[str, models.Model] = {}

    def run(self, config: ConfigFile) -> None:
        for i, spec in enumerate(config.providers):
            self._provider(spec, f"providers[{i}]")
        self.providers = providers_by_name()
        for i, spec in enumerate(config.models):
            self._model(spec, f"models[{i}]")
        self.models = models_by_name()
        for i, spec in enumerate(config.models):
            if spec.routing is not None:
                self._fallbacks(spec, f"models[{i}].routing.fallback_models")
        for i, spec in enumerate(config.mcp_servers):
            self._mcp_server(spec, f"mcp_servers[{i}]")
        self.mcp_servers = mcp_servers_by_name()
        single_sign_on: list[tuple[OrganizationSpec, str]] = []  # after the teams exist
        for entry in config_levels(config):
            self.levels[entry.names] = self._level(entry)
            self._rules(entry)
            if isinstance(entry.spec, OrganizationSpec) and entry.spec.end_users is not None:
                self._end_users(entry.spec, entry.path)
            if isinstance(entry.spec, OrganizationSpec) and entry.spec.sso is not None:
                single_sign_on.append((entry.spec, entry.path))
        for entry in config_users(config):
            self.levels[entry.names] = user_get_by_username(entry.names[-1])
            self._rules(entry)
        for spec, path in single_sign_on:  # its mapping names the organisation's levels
            self._sso(spec, path)

    def _end_users(self, spec: OrganizationSpec, path: str) -> None:
        assert spec.end_users is not None
        policies = []
        for p in spec.end_users:
            budget, limit = p.budget, p.rate_limit
            values = {
                "limit_usd": budget.limit_usd if budget else None,
                "period": budget.period.value if budget else "monthly",
                "hard": budget.hard if budget else True,
                "rpm": limit.rpm if limit else None,
                "tpm": limit.tpm if limit else None,
                "max_concurrency": limit.max_concurrency if limit else None,
            }
            policies.append((p.end_user, values))
        with _rows_at([f"{path}.end_users[{i}]" for i in range(len(policies))]):
            sync = end_user_policies_sync(organization=self.levels[(spec.name,)], policies=policies)
        self.result.extend(sync)

    def _sso(self, spec: OrganizationSpec, path: str) -> None:
        """The organisation's single sign-on (all or nothing; a secret never printed)."""
        assert spec.sso is not None
        organization = self.levels[(spec.name,)]
        existed = OidcProvider.objects.filter(organization=organization).exists()
        try:
            changed = sso_apply(organization=organization, spec=spec.sso, path=f"{path}.sso")
        except SsoConfigError as exc:
            raise ConfigError(exc.errors) from None
        label = f"single sign-on of {spec.name}"
        if not existed:
            self.result.created.append(label)
        elif changed:
            self.result.updated.append(f"{label} ({', '.join(changed)})")
        else:
            self.result.unchanged += 1

    def _saved(self, saved: Saved[Any], label: str) -> Any:
        self.result.add(saved, label)
        return saved.instance

    def _provider(self, spec: ProviderSpec, path: str) -> None:
        values: dict[str, Any] = {"kind": spec.kind.value, "api_base": spec.api_base}
        if spec.api_key is not None:
            values["api_key"] = spec.api_key.get_secret_value()
        elif spec.api_key_env is not None:
            values["api_key"] = os.environ[spec.api_key_env]
        if spec.options is not None:
            values["options"] = spec.options
        if spec.active is not None:
            values["is_active"] = spec.active
        with _errors_at(path):
            saved = provider_upsert(name=spec.name, data=values)
        self._saved(saved, f"provider {spec.name}")

    def _model(self, spec: ModelSpec, path: str) -> None:
        values: dict[str, Any] = {
            "input_per_mtok": spec.price.input_per_mtok,
            "output_per_mtok": spec.price.output_per_mtok,
        }
        if spec.active is not None:
            values["is_active"] = spec.active
        if spec.routing is not None:
            routing = spec.routing
            values.update(
                routing_strategy=routing.strategy.value,
                max_attempts=routing.max_attempts,
                attempt_timeout_seconds=routing.attempt_timeout_seconds,
                fallback_on_error="error" in routing.fallback_on,
                fallback_on_context_window="context_window" in routing.fallback_on,
                fallback_on_content_policy="content_policy" in routing.fallback_on,
            )
        with _errors_at(path):
            model = self._saved(model_upsert(name=spec.name, data=values), f"model {spec.name}")
        rows = []
        for dep in spec.deployments:
            row: dict[str, Any] = {
                "provider": self.providers[dep.provider],
                "upstream_model": dep.model,
                "weight": dep.weight,
                "role": dep.role.value,
                "priority": dep.priority,
                "tags": dep.tags,
            }
            if dep.active is not None:
                row["is_active"] = dep.active
            rows.append(row)
        paths = [f"{path}.deployments[{j}]" for j in range(len(rows))]
        with _rows_at(paths):
            self.result.extend(deployments_sync(model=model, deployments=rows))

    def _mcp_server(self, spec: McpServerSpec, path: str) -> None:
        """The server (credentials by field name only in the report), then its tool list."""
        stored = mcp_server_get_by_name(name=spec.name)
        values: dict[str, Any] = {
            "transport": "http" if spec.url is not None else "stdio",
            "url": spec.url or "",
            "command": spec.command or "",
            "args": spec.args,
        }
        if spec.bearer_token_env is not None:
            values["bearer_token"] = os.environ[spec.bearer_token_env]
        elif spec.bearer_token is not None:
            values["bearer_token"] = spec.bearer_token.get_secret_value()
        for name in ("headers", "environment"):
            mapping = _secret_map(getattr(spec, name), getattr(spec, f"{name}_env"))
            if mapping is not None:
                values[name] = _json_text(mapping, getattr(stored, name) if stored else "")
        if spec.active is not None:
            values["is_active"] = spec.active
        if spec.namespaced is not None:
            values["namespaced"] = spec.namespaced
        with _errors_at(path):
            saved = mcp_server_upsert(name=spec.name, data=values, server=stored)
        server = self._saved(saved, f"MCP server {spec.name}")
        tools = [
            {
                "name": tool.name,
                "requires_approval": tool.requires_approval,
                "rpm": tool.rpm,
                "cost_usd": tool.cost_usd,
            }
            for tool in spec.tools
        ]
        with _rows_at([f"{path}.tools[{j}]" for j in range(len(tools))]):
            self.result.extend(mcp_tools_sync(server=server, tools=tools))

    def _fallbacks(self, spec: ModelSpec, path: str) -> None:
        """The file's list replaces the model's fallback models, in its order."""
        assert spec.routing is not None
        names = spec.routing.fallback_models
        with _rows_at([f"{path}[{position}]" for position in range(len(names))]):
            sync = model_fallbacks_sync(
                model=self.models[spec.name], fallbacks=[self.models[n] for n in names]
            )
        self.result.extend(sync)

    def _level(self, entry: LevelEntry) -> models.Model:
        spec, label = entry.spec, f"{entry.kind} {'/'.join(entry.names)}"
        if isinstance(spec, KeySpec):
            return self._key(entry, label)
        values: dict[str, Any] = {}
        if getattr(spec, "active", None) is not None:
            values["is_active"] = spec.active  # type: ignore[attr-defined]
        with _errors_at(entry.path):
            if isinstance(spec, OrganizationSpec):
                stored = organization_get_by_name(name=spec.name)
                data = {**values, **_organization_values(spec, stored)}
                saved = organization_upsert(name=spec.name, data=data, organization=stored)
            elif isinstance(spec, TeamSpec):
                org = self.levels[entry.names[:-1]]
                saved = team_upsert(organization=org, name=spec.name, data=values)
            else:
                team = self.levels[entry.names[:-1]]
                saved = project_upsert(team=team, name=spec.name, data=values)
        return self._saved(saved, label)

    def _key(self, entry: LevelEntry, label: str) -> models.Model:
        spec = entry.spec
        assert isinstance(spec, KeySpec)
        project = self.levels[entry.names[:-1]]
        secret = spec.secret.get_secret_value() if spec.secret is not None else None
        owner = user_get_by_username(spec.owner) if spec.owner is not None else None
        key = key_get_by_name(project=project, name=spec.name)
        if key is None:
            with _errors_at(entry.path):
                issued = key_issue(
                    project=project,
                    name=spec.name,
                    owner=owner,
                    expires_at=spec.expires_at,
                    secret=secret,
                )
            key = issued.key
            self.result.created.append(label)
            if spec.revoked:
                key_revoke(key=key)
            elif secret is None:
                self.result.issued.append(("/".join(entry.names), issued.secret))
            return key
        data: dict[str, Any] = {}
        if "expires_at" in spec.model_fields_set:
            data["expires_at"] = spec.expires_at
        if owner is not None:
            data["owner"] = owner
        with _errors_at(entry.path):
            key, changed = key_update(key=key, data=data, secret=secret)
        if spec.revoked and not key.is_revoked:
            key_revoke(key=key)
            changed.append("revoked_at")
        elif spec.revoked is False and key.is_revoked:
            raise ConfigError(
                [f"{entry.path}.revoked: the key is revoked; issue a new key instead"]
            )
        if changed:
            shown = ["secret" if name == "digest" else name for name in changed if name != "prefix"]
            self.result.updated.append(f"{label} ({', '.join(shown)})")
        else:
            self.result.unchanged += 1
        return key

    def _rules(self, entry: LevelEntry) -> None:
        """Make the level's rules of each type exactly the file's (matched by natural key)."""
        owner = self.levels[entry.names]
        where = f"{entry.kind} {'/'.join(entry.names).removeprefix('@user/')}"
        for rule_type, rules in _level_rules(entry, self.models, self.mcp_servers).items():
            with _rows_at([path for path, _rule in rules]):
                sync = scoped_rules_sync(
                    rule_type=rule_type,
                    level=entry.kind,
                    owner=owner,
                    rules=[rule for _path, rule in rules],
                    where=where,
                )
            self.result.extend(sync)


def _level_rules(
    entry: LevelEntry, known_models: dict[str, Any], servers: dict[str, Any]
) -> dict[str, list[tuple[str, RuleSpec]]]:
    """The level's wanted rules of every type, each with its path in the file, in the order
    ``scoped_rules_sync`` applies them."""
    spec: LimitsSpec = entry.spec
    path = entry.path

    def model_id(name: str | None) -> int | None:
        return None if name is None else known_models[name].pk

    budgets = {
        (model_id(b.model), b.period.value): (
            f"{path}.{suffix}",
            f"{b.period.value}, {b.model or 'all models'}",
            {"limit_usd": b.limit_usd, "hard": b.hard, "alert_thresholds": b.alert_thresholds},
        )
        for suffix, b in spec.budget_list()
    }
    limits = {
        (model_id(r.model),): (
            f"{path}.{suffix}",
            r.model or "all models",
            {"rpm": r.rpm, "tpm": r.tpm, "max_concurrency": r.max_concurrency},
        )
        for suffix, r in spec.rate_limit_list()
    }
    access = {
        (model_id(name),): (f"{path}.models[{i}]", name, {}) for i, name in enumerate(spec.models)
    }
    wanted = {"budgets": budgets, "rate_limits": limits, "model_access": access}
    if not isinstance(spec, LevelSpec):  # a person: budgets, rate limits, model access only
        return _as_rule_specs(wanted)
    wanted |= _hierarchy_rules(spec, path, model_id, servers)
    return _as_rule_specs(wanted)


def _as_rule_specs(
    wanted: dict[str, dict[tuple, tuple[str, str, dict[str, Any]]]],
) -> dict[str, list[tuple[str, RuleSpec]]]:
    return {
        rule_type: [
            (where, RuleSpec(natural, detail, values))
            for natural, (where, detail, values) in rules.items()
        ]
        for rule_type, rules in wanted.items()
    }


def _hierarchy_rules(
    spec: LevelSpec, path: str, model_id: Any, servers: dict[str, Any]
) -> dict[str, dict[tuple, tuple[str, str, dict[str, Any]]]]:
    """The rule types only the hierarchy's levels carry."""
    aliases = {
        (alias,): (
            f"{path}.model_aliases.{alias}",
            f"{alias} → {target}",
            {"model_id": model_id(target)},
        )
        for alias, target in spec.model_aliases.items()
    }
    tags = {
        (tag,): (f"{path}.deployment_tags.{tag}", f"{tag}", {"allowed_values": values})
        for tag, values in spec.deployment_tags.items()
    }
    capture = {}
    if spec.capture is not None:
        mode = spec.capture.mode.value
        values = {"mode": mode, "max_bytes": spec.capture.max_bytes}
        capture[()] = (f"{path}.capture", mode, values)
    guards = {
        (g.detector.value, g.name): (
            f"{path}.guardrails[{i}]",
            f"{g.detector.value}{'.' + g.name if g.name else ''}",
            {
                "action": g.action.value,
                "mode": g.mode.value,
                "stage": g.stage.value,
                "allow_loosen": g.allow_loosen,
                "restore_in_response": g.restore_in_response,
                "settings": g.settings(),
            },
        )
        for i, g in enumerate(spec.guardrails)
    }
    grants = {
        (servers[g.server].pk, g.tool): (
            f"{path}.tools[{i}]",
            f"{g.effect.value} {g.server}{SEPARATOR}{g.tool}",
            {"effect": g.effect.value, "unattended": g.unattended},
        )
        for i, g in enumerate(spec.tools)
    }
    return {
        "model_aliases": aliases,
        "deployment_tags": tags,
        "capture": capture,
        "guardrails": guards,
        "tool_grants": grants,
    }


def _organization_values(spec: OrganizationSpec, stored: Any) -> dict[str, Any]:
    """The organisation fields the file sets; optional ones left out keep their value."""
    values: dict[str, Any] = {}
    if spec.display_name is not None:
        values["display_name"] = spec.display_name
    if spec.outage_policy is not None:
        values["outage_policy"] = spec.outage_policy.value
    if spec.audit_retention_days is not None:
        values["audit_retention_days"] = spec.audit_retention_days or None
    if spec.response_retention_days is not None:
        values["response_retention_days"] = spec.response_retention_days
    if spec.alerts is not None:
        values.update(_alert_values(spec.alerts, stored.alert_emails if stored else ""))
    return values


def _secret_map(
    given: dict[str, SecretStr] | None, from_env: dict[str, str] | None
) -> dict[str, str] | None:
    """A credential mapping from the file (``headers:``) or from the environment
    (``headers_env:`` names the variables); None when the file says neither."""
    if from_env is not None:
        return {name: os.environ[env] for name, env in from_env.items()}
    if given is not None:
        return {name: value.get_secret_value() for name, value in given.items()}
    return None


def _json_text(mapping: dict[str, str], stored_text: str) -> str:
    """How ``McpServer.headers``/``environment`` store a mapping (JSON); the same object
    stored differently is not a change, and ``{}`` clears it."""
    if not mapping:
        return ""
    try:
        stored = json.loads(stored_text) if stored_text else None
    except ValueError:
        stored = None
    return stored_text if stored == mapping else json.dumps(mapping, sort_keys=True)


def _alert_values(alerts: AlertsSpec, stored_emails: str) -> dict[str, Any]:
    """The organisation fields the file's ``alerts:`` sets; left-out fields are kept."""
    values: dict[str, Any] = {}
    given = alerts.model_fields_set
    if "webhook_url" in given:
        values["alert_webhook_url"] = alerts.webhook_url or ""
    if alerts.webhook_secret_env is not None:
        values["alert_webhook_secret"] = os.environ[alerts.webhook_secret_env]
    elif "webhook_secret" in given:
        secret = alerts.webhook_secret
        values["alert_webhook_secret"] = secret.get_secret_value() if secret else ""
    if "emails" in given:
        emails = alerts.emails or []
        stored = [a.strip() for a in stored_emails.split(",") if a.strip()]
        # The same list written differently by hand ("a@x,b@y") is not a change.
        values["alert_emails"] = stored_emails if stored == emails else email_text(emails)
    return values


def _report(result: ApplyResult, stdout: TextIO) -> None:
    for line in result.warnings:
        stdout.write(f"warning: {line}\n")
    for verb, lines in (
        ("created", result.created),
        ("updated", result.updated),
        ("deleted", result.deleted),
    ):
        for line in lines:
            stdout.write(f"{verb} {line}\n")
    for path, secret in result.issued:
        stdout.write(f"key {path}: {secret}\n")
    if result.issued:
        stdout.write("Copy the generated keys now: they are stored only as digests.\n")
    stdout.write(result.summary() + "\n")


def config_apply(config: ConfigFile, *, stdout: TextIO | None = None) -> ApplyResult:
    """Check, then apply in one transaction; print the outcome (and generated keys, once)
    to ``stdout`` only after the commit."""
    errors = config_check(config)
    if errors:
        raise ConfigError(errors)
    result = ApplyResult(warnings=config_warnings(config))
    with transaction.atomic():
        _Applier(result).run(config)
    if stdout is not None:
        _report(result, stdout)
    return result
