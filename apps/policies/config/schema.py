"""The declarative configuration file ``odock_apply`` reads: schema, checks and apply.

What a run does (and what a second run relies on):

- **Validate everything first.** The YAML is checked against the schema below
  (``extra="forbid"``: a misspelt field is an error), then for meaning: references to
  providers and models (in the file or already in the database), duplicate names, key
  secrets, environment variables. Every problem is reported as ``path: message``, e.g.
  ``organizations[0].teams[1].rate_limit.rpm: Input should be a valid integer``, and
  nothing is written.
- **One transaction.** An error found while applying rolls the whole run back. Generated
  key secrets are printed only after the commit.
- **Natural keys.** Providers and models by name; a deployment by (model, provider,
  upstream model); organisations by name, teams by name in their organisation, projects in
  their team, keys in their project.
- **Nothing is deleted by omission**, except the collections owned by an object the file
  mentions, which the file's list replaces: a model's ``deployments``, and a level's
  budgets (``budget:`` or ``budgets:``), rate limits (``rate_limit:`` or ``rate_limits:``)
  and model access (``models:``). So a level listed without ``budget:`` ends with no budget
  rows; an empty or absent ``models:`` list allows whatever the parent allows. Providers,
  models, organisations, teams, projects and keys the file does not name are left alone.
- **Optional scalars left out keep their current value** (``active``, a provider's
  ``api_key``/``options``, an organisation's ``display_name``, ``outage_policy`` and each
  of its ``alerts`` fields, a key's ``expires_at``); new rows get the model defaults.
- **Only real changes are saved**, so re-applying the same file writes nothing, does not
  bump the configuration version, and reports ``created 0, updated 0, deleted 0``.
- **Keys.** ``secret:`` is stored as its digest (and the digest replaced if the secret
  changed); without ``secret:`` a new key gets a generated secret printed once, and an
  existing key is left as it is. ``revoked: true`` revokes; it cannot be undone from the
  file. ``expires_at`` must carry a timezone.
- **Money** is Decimal: write it as a string (``"0.15"``) or a plain YAML number (read as
  Decimal, never float); negatives are refused.
- **Provider secrets** can come from the environment (``api_key_env: VAR``) so they need
  not sit in the file.
- **Organisations** may set ``outage_policy: fail_closed | fail_open`` (what the gateway
  does when Redis or the database is away) and ``alerts:`` for budget threshold alerts:
  ``webhook_url``, ``webhook_secret`` or ``webhook_secret_env: VAR`` (the HMAC key, stored
  encrypted), ``emails: [..]`` (each address checked). An empty value (``""``, ``[]``)
  clears that setting. Secrets, like key secrets, are never printed: the report names the
  changed field only.
- **Routing.** A model's ``routing:`` block (``strategy``, ``max_attempts``,
  ``attempt_timeout_seconds``, ``fallback_models`` in order, ``fallback_on`` a list of
  ``error`` / ``context_window`` / ``content_policy``) is complete when given: what it
  leaves out takes the defaults, and its ``fallback_models`` replace the model's. Without
  ``routing:`` the model's routing is left as it is. Deployments take ``priority`` (lower
  first for the ``priority`` strategy) and ``tags``.
- **Data residency.** A level's ``deployment_tags: {region: [eu]}`` replaces its tag rules:
  its requests may only be served by deployments whose tag has one of the values (every
  level's rules apply).
- **Audit.** A level's ``capture: {mode: none|redacted|full, max_bytes: N}`` replaces its
  content capture rule (absent: none at that level; the most specific level with a rule
  decides); an organisation's ``audit_retention_days`` (0: forever).
- **Guardrails.** A level's ``guardrails:`` list replaces its guardrail rules (matched by
  detector and custom name): ``{detector, name?, action: block|redact|flag, mode:
  enforce|shadow, stage: input|output|both, allow_loosen?, restore_in_response?}`` plus the
  detector's settings written flat (``regex``/``keywords``/``case_sensitive`` for custom,
  ``threshold`` for prompt_injection, ``max_input_bytes``/``max_messages``/
  ``max_prompt_tokens`` for input_limits). Each rule is validated like the admin form.
- **MCP.** ``mcp_servers:`` registers upstream MCP servers by name: ``url:`` (Streamable
  HTTP) or ``command:`` + ``args:`` (stdio), ``active``, ``namespaced`` (default true: tools
  and prompts are ``<server>__<name>``; false: upstream names), and credentials the gateway injects:
  ``bearer_token`` or ``bearer_token_env: VAR``, ``headers: {Name: value}`` or
  ``headers_env: {Name: VAR}``, and for stdio ``environment: {NAME: value}`` or
  ``environment_env: {NAME: VAR}`` (stored encrypted, never printed; left out: kept; ``""``
  or ``{}``: cleared). A server's ``tools:`` list (``name``, ``requires_approval``, ``rpm``,
  ``cost_usd``) replaces its per-tool settings. A level's ``tools:`` list replaces its tool
  grants, matched by (``server``, ``tool``): ``{server, tool: "*" | name, effect: allow|deny,
  unattended}``; the server may be in the file or already in the database.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TextIO

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from apps.audit.models import CaptureMode, ContentCapture
from apps.guardrails.models import Action as GuardrailAction
from apps.guardrails.models import Detector as GuardrailDetector
from apps.guardrails.models import GuardrailRule
from apps.guardrails.models import Mode as GuardrailMode
from apps.guardrails.models import Stage as GuardrailStage
from apps.keys.models import VirtualKey
from apps.keys.services import key_issue, key_revoke, key_secret_matches, key_set_secret
from apps.mcp.models import Effect as ToolEffect
from apps.mcp.models import McpServer, McpTool, ToolGrant, Transport
from apps.mcp.policy import SEPARATOR
from apps.policies.models import (
    Budget,
    BudgetPeriod,
    DeploymentTagRule,
    ModelAccess,
    RateLimit,
    ScopedRule,
)
from apps.providers.models import (
    Deployment,
    DeploymentRole,
    Model,
    ModelFallback,
    Provider,
    ProviderKind,
    RoutingStrategy,
)
from apps.tenancy.models import Organization, OutagePolicy, Project, Team


class ConfigError(Exception):
    """The file is invalid or cannot be applied; ``errors`` are ``path: message`` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- Schema ---------------------------------------------------------------------------


def _refuse_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError('money must be a Decimal: write it as a string, e.g. "0.15"')
    return value


Money = Annotated[
    Decimal, BeforeValidator(_refuse_float), Field(ge=0, max_digits=14, decimal_places=6)
]
Slug = Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0)]


def _plain_json(value: Any) -> Any:
    """Free-form settings land in a JSONField: YAML's Decimals and dates become JSON types
    (these are options and tags, not money)."""
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceSpec(_Spec):
    input_per_mtok: Money
    output_per_mtok: Money


class DeploymentSpec(_Spec):
    provider: Slug
    model: ModelName  # the model's name at the provider
    weight: PositiveInt = 1
    role: DeploymentRole = DeploymentRole.PRIMARY
    priority: Count = 0
    tags: JsonObject = Field(default_factory=dict)
    active: bool | None = None


FallbackTrigger = Literal["error", "context_window", "content_policy"]


class RoutingSpec(_Spec):
    """A model's routing, complete: fields left out take the defaults."""

    strategy: RoutingStrategy = RoutingStrategy.WEIGHTED
    max_attempts: PositiveInt | None = None
    attempt_timeout_seconds: Annotated[float, Field(ge=0.1)] | None = None
    fallback_models: list[ModelName] = Field(default_factory=list)
    fallback_on: list[FallbackTrigger] = Field(default_factory=lambda: ["error", "context_window"])


class ModelSpec(_Spec):
    name: ModelName
    price: PriceSpec
    deployments: list[DeploymentSpec] = Field(default_factory=list)
    routing: RoutingSpec | None = None
    active: bool | None = None


class ProviderSpec(_Spec):
    name: Slug
    kind: ProviderKind
    api_base: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    options: JsonObject | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderSpec:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self


class BudgetSpec(_Spec):
    limit_usd: Money
    period: BudgetPeriod = BudgetPeriod.MONTHLY
    hard: bool = True
    alert_thresholds: list[PositiveInt] = Field(default_factory=lambda: [50, 80, 100])
    model: ModelName | None = None


class RateLimitSpec(_Spec):
    rpm: Count | None = None
    tpm: Count | None = None
    max_concurrency: Count | None = None
    model: ModelName | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitSpec:
        if self.rpm is None and self.tpm is None and self.max_concurrency is None:
            raise ValueError("set at least one of rpm, tpm, max_concurrency")
        return self


class GuardrailSpec(_Spec):
    """One guardrail rule; detector-specific settings are written flat beside it."""

    detector: GuardrailDetector
    name: Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]+$", max_length=64)] = ""
    action: GuardrailAction = GuardrailAction.BLOCK
    mode: GuardrailMode = GuardrailMode.ENFORCE
    stage: GuardrailStage = GuardrailStage.INPUT
    allow_loosen: bool = False
    restore_in_response: bool = False
    regex: str | None = None
    keywords: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    case_sensitive: bool | None = None
    threshold: Annotated[float, Field(gt=0, le=1)] | None = None
    max_input_bytes: PositiveInt | None = None
    max_messages: PositiveInt | None = None
    max_prompt_tokens: PositiveInt | None = None

    def settings(self) -> dict[str, Any]:
        names = (
            "regex",
            "keywords",
            "case_sensitive",
            "threshold",
            "max_input_bytes",
            "max_messages",
            "max_prompt_tokens",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class CaptureSpec(_Spec):
    mode: CaptureMode
    max_bytes: Annotated[int, Field(ge=256, le=1_048_576)] = 16_384


ToolName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class ToolGrantSpec(_Spec):
    """One tool grant of a level: a server's tool (``*``: every tool) allowed or denied."""

    server: Slug
    tool: ToolName = "*"
    effect: ToolEffect = ToolEffect.ALLOW
    unattended: bool = False


class LevelSpec(_Spec):
    """Rules any level can carry; each list replaces that level's rules of its type."""

    budget: BudgetSpec | None = None
    budgets: list[BudgetSpec] | None = None
    rate_limit: RateLimitSpec | None = None
    rate_limits: list[RateLimitSpec] | None = None
    models: list[ModelName] = Field(default_factory=list)
    # What the audit record keeps of prompt and response at this level (and below).
    capture: CaptureSpec | None = None
    # Guardrail rules of this level (the list replaces the level's rules).
    guardrails: list[GuardrailSpec] = Field(default_factory=list)
    # Data residency: tag -> allowed values, e.g. {"region": ["eu"]}.
    deployment_tags: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64)],
        Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)],
    ] = Field(default_factory=dict)
    # MCP tool grants of this level (the list replaces the level's grants).
    tools: list[ToolGrantSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _single_or_list(self) -> LevelSpec:
        for one, many in (("budget", "budgets"), ("rate_limit", "rate_limits")):
            if getattr(self, one) is not None and getattr(self, many) is not None:
                raise ValueError(f"give {one} or {many}, not both")
        return self

    def budget_list(self) -> list[tuple[str, BudgetSpec]]:
        """(path suffix, spec) pairs, whichever of the two spellings was used."""
        if self.budget is not None:
            return [("budget", self.budget)]
        return [(f"budgets[{i}]", b) for i, b in enumerate(self.budgets or [])]

    def rate_limit_list(self) -> list[tuple[str, RateLimitSpec]]:
        if self.rate_limit is not None:
            return [("rate_limit", self.rate_limit)]
        return [(f"rate_limits[{i}]", r) for i, r in enumerate(self.rate_limits or [])]


class KeySpec(LevelSpec):
    name: Slug
    secret: SecretStr | None = None
    expires_at: AwareDatetime | None = None
    revoked: bool | None = None


class ProjectSpec(LevelSpec):
    name: Slug
    active: bool | None = None
    keys: list[KeySpec] = Field(default_factory=list)


class TeamSpec(LevelSpec):
    name: Slug
    active: bool | None = None
    projects: list[ProjectSpec] = Field(default_factory=list)


def _email(value: str) -> str:
    try:
        validate_email(value)
    except ValidationError as exc:
        raise ValueError(exc.messages[0]) from None
    return value


def _webhook_url(value: str) -> str:
    """The model field's own rules (URL syntax, length); "" clears the URL."""
    try:
        Organization._meta.get_field("alert_webhook_url").clean(value, None)
    except ValidationError as exc:
        raise ValueError(" ".join(exc.messages)) from None
    return value


class AlertsSpec(_Spec):
    """Where an organisation's budget alerts go; a field left out keeps its value."""

    webhook_url: Annotated[str, AfterValidator(_webhook_url)] | None = None
    webhook_secret: SecretStr | None = None
    webhook_secret_env: str | None = None
    emails: list[Annotated[str, AfterValidator(_email)]] | None = None

    @model_validator(mode="after")
    def _one_secret_source(self) -> AlertsSpec:
        if self.webhook_secret is not None and self.webhook_secret_env is not None:
            raise ValueError("give webhook_secret or webhook_secret_env, not both")
        return self


class OrganizationSpec(LevelSpec):
    name: Slug
    display_name: str | None = None
    active: bool | None = None
    outage_policy: OutagePolicy | None = None
    alerts: AlertsSpec | None = None
    # Audit records older than this are purged (by sealed segment); 0: kept forever.
    audit_retention_days: Count | None = None
    teams: list[TeamSpec] = Field(default_factory=list)


class McpToolSpec(_Spec):
    """Settings of one upstream tool; the server's list replaces its tool settings."""

    name: ToolName
    requires_approval: bool = False
    rpm: PositiveInt | None = None
    cost_usd: Money = Decimal(0)


class McpServerSpec(_Spec):
    name: Slug
    url: str | None = None
    command: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    args: list[str] = Field(default_factory=list)
    bearer_token: SecretStr | None = None
    bearer_token_env: str | None = None
    headers: dict[HeaderName, SecretStr] | None = None
    headers_env: dict[HeaderName, str] | None = None
    environment: dict[EnvName, SecretStr] | None = None
    environment_env: dict[EnvName, str] | None = None
    active: bool | None = None
    namespaced: bool | None = None
    tools: list[McpToolSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of_each(self) -> McpServerSpec:
        if (self.url is None) == (self.command is None):
            raise ValueError("give url (Streamable HTTP) or command (stdio), exactly one")
        if self.url is not None and self.args:
            raise ValueError("args go with command (stdio), not url")
        if self.bearer_token is not None and self.bearer_token_env is not None:
            raise ValueError("give bearer_token or bearer_token_env, not both")
        if self.headers is not None and self.headers_env is not None:
            raise ValueError("give headers or headers_env, not both")
        if self.environment is not None and self.environment_env is not None:
            raise ValueError("give environment or environment_env, not both")
        if self.url is not None and (self.environment or self.environment_env):
            raise ValueError("environment goes with command (stdio), not url")
        return self


class ConfigFile(_Spec):
    providers: list[ProviderSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    organizations: list[OrganizationSpec] = Field(default_factory=list)
    mcp_servers: list[McpServerSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LevelEntry:
    """One level of the hierarchy in the file, parents before children."""

    path: str  # e.g. organizations[0].teams[1]
    kind: str  # organization, team, project or key (the rule models' field names)
    names: tuple[str, ...]  # e.g. ("acme", "search")
    spec: LevelSpec


def config_levels(config: ConfigFile) -> Iterator[LevelEntry]:
    for i, org in enumerate(config.organizations):
        org_path = f"organizations[{i}]"
        yield LevelEntry(org_path, "organization", (org.name,), org)
        for j, team in enumerate(org.teams):
            team_path = f"{org_path}.teams[{j}]"
            yield LevelEntry(team_path, "team", (org.name, team.name), team)
            for k, project in enumerate(team.projects):
                project_path = f"{team_path}.projects[{k}]"
                names = (org.name, team.name, project.name)
                yield LevelEntry(project_path, "project", names, project)
                for n, key in enumerate(project.keys):
                    yield LevelEntry(f"{project_path}.keys[{n}]", "key", (*names, key.name), key)


# --- Loading --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML numbers with a fraction load as Decimal (money never passes through float), and
    a key given twice in one mapping is an error instead of silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_decimal(self, node: yaml.ScalarNode) -> Decimal | float:
        try:
            return Decimal(self.construct_scalar(node).replace("_", ""))
        except InvalidOperation:  # .inf, .nan, sexagesimal: let the schema refuse them
            return self.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_decimal)


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def config_load(text: str) -> ConfigFile:
    """Parse and validate the file's structure (meaning is checked by ``config_check``)."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError([f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"(file): {exc}"]) from None
    try:
        return ConfigFile.model_validate(data if data is not None else {})
    except PydanticValidationError as exc:
        raise ConfigError(
            [
                f"{_error_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            ]
        ) from None


# --- Checks ---------------------------------------------------------------------------


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
    _duplicates(
        errors,
        f"{path}.guardrails",
        [(g.detector.value, g.name) for g in spec.guardrails],
        "guardrail (detector, name)",
    )
    for i, grant in enumerate(spec.tools):
        if grant.server not in known_servers:
            errors.append(f"{path}.tools[{i}].server: unknown MCP server {grant.server!r}")
    _duplicates(
        errors,
        f"{path}.tools",
        [(g.server, g.tool) for g in spec.tools],
        "tool grant (server, tool)",
    )


def _check_mcp_servers(errors: list[str], servers: list[McpServerSpec]) -> None:
    _duplicates(errors, "mcp_servers", [s.name for s in servers], "MCP server")
    for i, server in enumerate(servers):
        path = f"mcp_servers[{i}]"
        if SEPARATOR in server.name:
            errors.append(f"{path}.name: a server name may not contain {SEPARATOR!r}")
        if server.url is not None:
            try:  # the model field's own rules (URL syntax, length)
                McpServer._meta.get_field("url").clean(server.url, None)
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
        limit = Organization._meta.get_field("alert_emails").max_length
        if len(_email_text(alerts.emails)) > limit:
            errors.append(f"{path}.emails: longer than {limit} characters in all")


def config_check(config: ConfigFile) -> list[str]:
    """Errors of meaning, each as ``path: message``; references may name rows already in
    the database as well as ones in the file."""
    errors: list[str] = []
    known_providers = {p.name for p in config.providers} | set(
        Provider.objects.values_list("name", flat=True)
    )
    known_models = {m.name for m in config.models} | set(
        Model.objects.values_list("name", flat=True)
    )
    _duplicates(errors, "providers", [p.name for p in config.providers], "provider")
    for i, provider in enumerate(config.providers):
        try:  # the model field's own rules (URL syntax, length)
            Provider._meta.get_field("api_base").clean(provider.api_base, None)
        except ValidationError as exc:
            errors.extend(f"providers[{i}].api_base: {m}" for m in exc.messages)
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
    known_servers = {s.name for s in config.mcp_servers} | set(
        McpServer.objects.values_list("name", flat=True)
    )
    _duplicates(errors, "organizations", [o.name for o in config.organizations], "organization")
    for i, org in enumerate(config.organizations):
        _check_alerts(errors, f"organizations[{i}].alerts", org.alerts)
    secrets: dict[str, str] = {}
    for entry in config_levels(config):
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
                key_set_secret(key=VirtualKey(), secret=secret)  # the service's own rule
            except ValueError as exc:
                errors.append(f"{entry.path}.secret: {exc}")
            if secret in secrets:
                errors.append(f"{entry.path}.secret: same secret as {secrets[secret]}")
            secrets.setdefault(secret, entry.path)
    return errors


def config_warnings(config: ConfigFile) -> list[str]:
    """Nothing the file can say is ignored today; kept for the report's warning lines."""
    return []


# --- Apply ----------------------------------------------------------------------------


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
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


@dataclass(frozen=True, slots=True)
class _Rule:
    path: str  # where the file says it, for errors
    detail: str  # for the report, e.g. "monthly, all models"
    values: dict[str, Any]


@contextmanager
def _errors_at(path: str) -> Iterator[None]:
    """Turn a model's ValidationError into ConfigError lines under the file's path."""
    try:
        yield
    except ValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise ConfigError([f"{path}: {m}" for m in exc.messages]) from None
        lines = []
        for name, messages in exc.message_dict.items():
            if name == "digest":  # the only unique digest clash: a secret already in use
                lines.append(f"{path}.secret: this secret is already used by another key")
                continue
            where = path if name == "__all__" else f"{path}.{name}"
            lines.extend(f"{where}: {m}" for m in messages)
        raise ConfigError(lines) from None


class _Applier:
    """Applies a checked ConfigFile; one instance per run, inside one transaction."""

    def __init__(self, result: ApplyResult) -> None:
        self.result = result
        self.providers: dict[str, Provider] = {}
        self.models: dict[str, Model] = {}
        self.levels: dict[tuple[str, ...], models.Model] = {}
        self.mcp_servers: dict[str, McpServer] = {}

    def run(self, config: ConfigFile) -> None:
        for i, spec in enumerate(config.providers):
            self._provider(spec, f"providers[{i}]")
        self.providers = {p.name: p for p in Provider.objects.only("name")}
        for i, spec in enumerate(config.models):
            self._model(spec, f"models[{i}]")
        self.models = {m.name: m for m in Model.objects.only("name")}
        for i, spec in enumerate(config.models):
            if spec.routing is not None:
                self._fallbacks(spec, f"models[{i}].routing.fallback_models")
        for i, spec in enumerate(config.mcp_servers):
            self._mcp_server(spec, f"mcp_servers[{i}]")
        self.mcp_servers = {s.name: s for s in McpServer.objects.only("name")}
        for entry in config_levels(config):
            self.levels[entry.names] = self._level(entry)
            self._rules(entry)

    def _save(self, obj: models.Model, values: dict[str, Any], label: str, path: str) -> None:
        """Create ``obj`` or update the fields that differ; an identical row is not saved."""
        adding = obj._state.adding
        changed = [name for name, value in values.items() if getattr(obj, name) != value]
        if not adding and not changed:
            self.result.unchanged += 1
            return
        for name in changed:
            setattr(obj, name, values[name])
        with _errors_at(path):
            obj.full_clean()
        obj.save(update_fields=None if adding else changed)
        if adding:
            self.result.created.append(label)
        else:
            self.result.updated.append(f"{label} ({', '.join(changed)})")

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
        obj = Provider.objects.filter(name=spec.name).first() or Provider(name=spec.name)
        self._save(obj, values, f"provider {spec.name}", path)

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
        model = Model.objects.filter(name=spec.name).first() or Model(name=spec.name)
        self._save(model, values, f"model {spec.name}", path)
        existing = {(d.provider_id, d.upstream_model): d for d in model.deployments.all()}
        for j, dep in enumerate(spec.deployments):
            provider = self.providers[dep.provider]
            row = existing.pop((provider.pk, dep.model), None) or Deployment(
                model=model, provider=provider, upstream_model=dep.model
            )
            dep_values: dict[str, Any] = {
                "weight": dep.weight,
                "role": dep.role.value,
                "priority": dep.priority,
                "tags": dep.tags,
            }
            if dep.active is not None:
                dep_values["is_active"] = dep.active
            self._save(row, dep_values, f"deployment {row}", f"{path}.deployments[{j}]")
        for row in existing.values():
            row.delete()
            self.result.deleted.append(f"deployment {row}")

    def _mcp_server(self, spec: McpServerSpec, path: str) -> None:
        """The server (credentials by field name only in the report), then its tool list."""
        server = McpServer.objects.filter(name=spec.name).first() or McpServer(name=spec.name)
        values: dict[str, Any] = {
            "transport": (Transport.HTTP if spec.url is not None else Transport.STDIO).value,
            "url": spec.url or "",
            "command": spec.command or "",
            "args": spec.args,
        }
        if spec.bearer_token_env is not None:
            values["bearer_token"] = os.environ[spec.bearer_token_env]
        elif spec.bearer_token is not None:
            values["bearer_token"] = spec.bearer_token.get_secret_value()
        headers: dict[str, str] | None = None
        if spec.headers_env is not None:
            headers = {name: os.environ[env] for name, env in spec.headers_env.items()}
        elif spec.headers is not None:
            headers = {name: value.get_secret_value() for name, value in spec.headers.items()}
        if headers is not None:
            values["headers"] = _json_text(headers, server.headers)
        environment: dict[str, str] | None = None
        if spec.environment_env is not None:
            environment = {name: os.environ[env] for name, env in spec.environment_env.items()}
        elif spec.environment is not None:
            environment = {k: v.get_secret_value() for k, v in spec.environment.items()}
        if environment is not None:
            values["environment"] = _json_text(environment, server.environment)
        if spec.active is not None:
            values["is_active"] = spec.active
        if spec.namespaced is not None:
            values["namespaced"] = spec.namespaced
        self._save(server, values, f"MCP server {spec.name}", path)
        existing = {t.name: t for t in server.tools.all()}
        for j, tool in enumerate(spec.tools):
            row = existing.pop(tool.name, None) or McpTool(server=server, name=tool.name)
            tool_values = {
                "requires_approval": tool.requires_approval,
                "rpm": tool.rpm,
                "cost_usd": tool.cost_usd,
            }
            label = f"MCP tool setting {spec.name}{SEPARATOR}{tool.name}"
            self._save(row, tool_values, label, f"{path}.tools[{j}]")
        for row in existing.values():
            row.delete()
            self.result.deleted.append(f"MCP tool setting {spec.name}{SEPARATOR}{row.name}")

    def _fallbacks(self, spec: ModelSpec, path: str) -> None:
        """The file's list replaces the model's fallback models, in its order."""
        assert spec.routing is not None
        model = self.models[spec.name]
        existing = {f.fallback_id: f for f in ModelFallback.objects.filter(model=model)}
        for position, name in enumerate(spec.routing.fallback_models):
            fallback = self.models[name]
            row = existing.pop(fallback.pk, None) or ModelFallback(model=model, fallback=fallback)
            label = f"fallback {spec.name} → {name}"
            self._save(row, {"position": position}, label, f"{path}[{position}]")
        for row in existing.values():
            row.delete()
            self.result.deleted.append(f"fallback {row}")

    def _level(self, entry: LevelEntry) -> models.Model:
        spec, label = entry.spec, f"{entry.kind} {'/'.join(entry.names)}"
        if isinstance(spec, KeySpec):
            return self._key(entry, label)
        values: dict[str, Any] = {}
        if getattr(spec, "active", None) is not None:
            values["is_active"] = spec.active  # type: ignore[attr-defined]
        if isinstance(spec, OrganizationSpec):
            obj = Organization.objects.filter(name=spec.name).first() or Organization(
                name=spec.name
            )
            if spec.display_name is not None:
                values["display_name"] = spec.display_name
            if spec.outage_policy is not None:
                values["outage_policy"] = spec.outage_policy.value
            if spec.audit_retention_days is not None:
                values["audit_retention_days"] = spec.audit_retention_days or None
            if spec.alerts is not None:
                values.update(_alert_values(spec.alerts, obj))
        elif isinstance(spec, TeamSpec):
            org = self.levels[entry.names[:-1]]
            obj = Team.objects.filter(organization=org, name=spec.name).first() or Team(
                organization=org, name=spec.name
            )
        else:
            team = self.levels[entry.names[:-1]]
            obj = Project.objects.filter(team=team, name=spec.name).first() or Project(
                team=team, name=spec.name
            )
        self._save(obj, values, label, entry.path)
        return obj

    def _key(self, entry: LevelEntry, label: str) -> VirtualKey:
        spec = entry.spec
        assert isinstance(spec, KeySpec)
        project = self.levels[entry.names[:-1]]
        secret = spec.secret.get_secret_value() if spec.secret is not None else None
        key = VirtualKey.objects.filter(project=project, name=spec.name).first()
        if key is None:
            with _errors_at(entry.path):
                issued = key_issue(
                    project=project, name=spec.name, expires_at=spec.expires_at, secret=secret
                )
            key = issued.key
            self.result.created.append(label)
            if spec.revoked:
                key_revoke(key=key)
            elif secret is None:
                self.result.issued.append(("/".join(entry.names), issued.secret))
            return key
        changed = []
        if secret is not None and not key_secret_matches(key=key, secret=secret):
            key_set_secret(key=key, secret=secret)
            changed += ["digest", "prefix"]
        if "expires_at" in spec.model_fields_set and key.expires_at != spec.expires_at:
            key.expires_at = spec.expires_at
            changed.append("expires_at")
        if changed:
            with _errors_at(entry.path):
                key.full_clean()
            key.save(update_fields=changed)
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
        owner, spec = self.levels[entry.names], entry.spec
        where = f"{entry.kind} {'/'.join(entry.names)}"

        def model_id(name: str | None) -> int | None:
            return None if name is None else self.models[name].pk

        budgets = {
            (model_id(b.model), b.period.value): _Rule(
                f"{entry.path}.{suffix}",
                f"{b.period.value}, {b.model or 'all models'}",
                {"limit_usd": b.limit_usd, "hard": b.hard, "alert_thresholds": b.alert_thresholds},
            )
            for suffix, b in spec.budget_list()
        }
        limits = {
            (model_id(r.model),): _Rule(
                f"{entry.path}.{suffix}",
                r.model or "all models",
                {"rpm": r.rpm, "tpm": r.tpm, "max_concurrency": r.max_concurrency},
            )
            for suffix, r in spec.rate_limit_list()
        }
        access = {
            (model_id(name),): _Rule(f"{entry.path}.models[{i}]", name, {})
            for i, name in enumerate(spec.models)
        }
        capture = (
            {
                (): _Rule(
                    f"{entry.path}.capture",
                    spec.capture.mode.value,
                    {"mode": spec.capture.mode.value, "max_bytes": spec.capture.max_bytes},
                )
            }
            if spec.capture is not None
            else {}
        )
        guards = {
            (g.detector.value, g.name): _Rule(
                f"{entry.path}.guardrails[{i}]",
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
        tags = {
            (tag,): _Rule(
                f"{entry.path}.deployment_tags.{tag}", f"{tag}", {"allowed_values": values}
            )
            for tag, values in spec.deployment_tags.items()
        }
        grants = {
            (self.mcp_servers[g.server].pk, g.tool): _Rule(
                f"{entry.path}.tools[{i}]",
                f"{g.effect.value} {g.server}{SEPARATOR}{g.tool}",
                {"effect": g.effect.value, "unattended": g.unattended},
            )
            for i, g in enumerate(spec.tools)
        }
        for rule_model, match, desired in (
            (Budget, ("model_id", "period"), budgets),
            (RateLimit, ("model_id",), limits),
            (ModelAccess, ("model_id",), access),
            (DeploymentTagRule, ("tag",), tags),
            (ContentCapture, (), capture),
            (GuardrailRule, ("detector", "name"), guards),
            (ToolGrant, ("server_id", "tool"), grants),
        ):
            self._sync_rules(rule_model, match, desired, entry.kind, owner, where)

    def _sync_rules(
        self,
        rule_model: type[ScopedRule],
        match: tuple[str, ...],
        desired: dict[tuple, _Rule],
        level: str,
        owner: models.Model,
        where: str,
    ) -> None:
        name = rule_model._meta.verbose_name
        kept: dict[tuple, ScopedRule] = {}
        for row in rule_model.objects.filter(**{level: owner}).order_by("pk"):
            natural = tuple(getattr(row, f) for f in match)
            if natural in desired and natural not in kept:
                kept[natural] = row
            else:
                row.delete()
                self.result.deleted.append(f"{name} on {where} ({row})")
        for natural, rule in desired.items():
            row = kept.get(natural) or rule_model(
                **{level: owner}, **dict(zip(match, natural, strict=True))
            )
            self._save(row, rule.values, f"{name} on {where} ({rule.detail})", rule.path)


def _email_text(emails: list[str]) -> str:
    """How ``Organization.alert_emails`` stores a list (the alert sender splits on commas)."""
    return ", ".join(emails)


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


def _alert_values(alerts: AlertsSpec, org: Organization) -> dict[str, Any]:
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
        stored = [a.strip() for a in org.alert_emails.split(",") if a.strip()]
        # The same list written differently by hand ("a@x,b@y") is not a change.
        values["alert_emails"] = org.alert_emails if stored == emails else _email_text(emails)
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
