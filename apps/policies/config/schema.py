"""The shape of the file ``odock_apply`` reads: pydantic specs (``extra="forbid"``: a
misspelt field is an error) and the loader that turns YAML into a ``ConfigFile``, every
structural problem reported as ``path: message``.

What the file means is described in ``apps.policies.config``; the choice enums come from
the apps' models so a value the file accepts is one the database accepts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
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

from apps.audit.models import CaptureMode
from apps.guardrails.models import Action as GuardrailAction
from apps.guardrails.models import Detector as GuardrailDetector
from apps.guardrails.models import Mode as GuardrailMode
from apps.guardrails.models import Stage as GuardrailStage
from apps.mcp.models import Effect as ToolEffect
from apps.policies.models import END_USER_MATCH, BudgetPeriod
from apps.providers.models import DeploymentRole, ProviderKind, RoutingStrategy
from apps.sso.config import SsoSpec
from apps.tenancy.models import OutagePolicy
from apps.tenancy.services import organization_field_validate


class ConfigError(Exception):
    """The file is invalid or cannot be applied; ``errors`` are ``path: message`` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


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
    method: Literal["combined", "rules", "model"] | None = None  # prompt_injection
    max_input_bytes: PositiveInt | None = None
    max_messages: PositiveInt | None = None
    max_prompt_tokens: PositiveInt | None = None
    # Phone rules: the countries whose national formats to expect (ISO 3166 codes; "+" forms
    # are found for every country) and libphonenumber's leniency.
    regions: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")]] | None = None
    leniency: Literal["possible", "valid", "strict_grouping", "exact_grouping"] | None = None

    def settings(self) -> dict[str, Any]:
        names = (
            "regex",
            "regions",
            "leniency",
            "keywords",
            "case_sensitive",
            "threshold",
            "method",
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


AliasName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.:/@]*\*?$", max_length=200)
]


class ToolGrantSpec(_Spec):
    """One tool grant of a level: a server's tool (``*``: every tool) allowed or denied."""

    server: Slug
    tool: ToolName = "*"
    effect: ToolEffect = ToolEffect.ALLOW
    unattended: bool = False


class LimitsSpec(_Spec):
    """Budgets, rate limits and model access: what every level, a person included, can
    carry. Each list replaces that level's rules of its type."""

    budget: BudgetSpec | None = None
    budgets: list[BudgetSpec] | None = None
    rate_limit: RateLimitSpec | None = None
    rate_limits: list[RateLimitSpec] | None = None
    models: list[ModelName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _single_or_list(self) -> LimitsSpec:
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


Username = Annotated[str, StringConstraints(min_length=1, max_length=150)]


class UserSpec(LimitsSpec):
    """A person's own budgets, rate limits and model access: they govern every key the
    person owns. The person must exist already (single sign-on, SCIM or the admin create
    people; the file does not)."""

    username: Username


class EndUserBudgetSpec(_Spec):
    limit_usd: Money
    period: BudgetPeriod = BudgetPeriod.MONTHLY
    hard: bool = True


class EndUserRateLimitSpec(_Spec):
    rpm: Count | None = None
    tpm: Count | None = None
    max_concurrency: Count | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> EndUserRateLimitSpec:
        if self.rpm is None and self.tpm is None and self.max_concurrency is None:
            raise ValueError("set at least one of rpm, tpm, max_concurrency")
        return self


class EndUserPolicySpec(_Spec):
    """Limits each end user matching ``end_user`` (an id, ``prefix*`` or ``*``) carries."""

    end_user: Annotated[
        str, StringConstraints(pattern=END_USER_MATCH.regex.pattern, max_length=128)
    ]
    budget: EndUserBudgetSpec | None = None
    rate_limit: EndUserRateLimitSpec | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> EndUserPolicySpec:
        if self.budget is None and self.rate_limit is None:
            raise ValueError("set a budget or a rate_limit")
        return self


class LevelSpec(LimitsSpec):
    """Rules any level of the hierarchy can carry; each list replaces that level's rules
    of its type."""

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
    # Model aliases: a name clients send (exact, or a prefix ending in one *) -> a served
    # model, e.g. {claude-sonnet-5: my-model, "claude-haiku-*": small}.
    model_aliases: dict[AliasName, ModelName] = Field(default_factory=dict)


class KeySpec(LevelSpec):
    name: Slug
    # The person who owns the key (their own rules govern it too); left out: kept.
    owner: Username | None = None
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
        organization_field_validate(name="alert_webhook_url", value=value)
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
    # Stored responses (POST /v1/responses) older than this are gone; 0: until deleted.
    response_retention_days: Count | None = None
    # Limits of the application's end users (the list replaces the organisation's).
    end_users: list[EndUserPolicySpec] | None = None
    # The organisation's OpenID Connect provider and group → role mapping (apps.sso).
    sso: SsoSpec | None = None
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
    users: list[UserSpec] = Field(default_factory=list)
    mcp_servers: list[McpServerSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LevelEntry:
    """One level of the hierarchy in the file, parents before children."""

    path: str  # e.g. organizations[0].teams[1]
    kind: str  # organization, team, project or key (the rule models' field names)
    names: tuple[str, ...]  # e.g. ("acme", "search")
    spec: LimitsSpec


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


def config_users(config: ConfigFile) -> Iterator[LevelEntry]:
    """The people the file gives rules to (``names``: ("@user", username), apart from any
    organisation's name)."""
    for i, user in enumerate(config.users):
        yield LevelEntry(f"users[{i}]", "user", ("@user", user.username), user)


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
