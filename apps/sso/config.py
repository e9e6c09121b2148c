"""The ``sso:`` block of an organisation in ``odock_apply``'s YAML file: the same
configuration as the admin page (provider and claim mapping), declaratively::

    organizations:
      - name: acme
        sso:
          issuer: https://login.acme.example
          client_id: odock
          client_secret_env: ACME_OIDC_SECRET   # or client_secret: "..."
          allowed_email_domains: [acme.example]
          mappings:
            - {group: search-admins, role: team_admin, team: search}
            - {group: acme-finance, role: finance}
            - {group: web-devs, role: member, project: search/web}

Fields left out keep their current value (new providers get the defaults), the secret is
never printed, and ``mappings`` replaces the provider's mapping (the collection is owned
by the block). :func:`sso_apply` validates everything before writing and reports every
problem as ``path: message``; call it inside the run's transaction after the
organisation's teams and projects exist. Wiring it into ``apps.policies.config`` (owned
elsewhere) is two lines: ``sso: SsoSpec | None = None`` on the organisation's spec and a
call to ``sso_apply`` per organisation that has one.
"""

from __future__ import annotations

import os
from typing import Annotated

from django.core.exceptions import ValidationError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from apps.sso.models import GroupMapping, OidcProvider
from apps.tenancy.models import Organization, Project, Team

SsoRole = Annotated[
    str, Field(pattern=r"^(org_admin|team_admin|finance|auditor|member)$")
]  # never platform_admin


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MappingSpec(_Spec):
    group: Annotated[str, Field(min_length=1, max_length=255)]
    role: SsoRole
    team: str | None = None  # a team's name in the organisation
    project: str | None = None  # "team/project"

    @model_validator(mode="after")
    def _one_level(self) -> MappingSpec:
        if self.team is not None and self.project is not None:
            raise ValueError("name a team or a project, not both")
        return self


class SsoSpec(_Spec):
    issuer: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    enabled: bool | None = None
    scopes: str | None = None
    groups_claim: str | None = None
    username_claim: str | None = None
    email_claim: str | None = None
    allowed_email_domains: list[str] | None = None
    mappings: list[MappingSpec] | None = None

    @model_validator(mode="after")
    def _one_secret_source(self) -> SsoSpec:
        if self.client_secret is not None and self.client_secret_env is not None:
            raise ValueError("give client_secret or client_secret_env, not both")
        return self


class SsoConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


_FIELDS = (
    "issuer",
    "client_id",
    "enabled",
    "scopes",
    "groups_claim",
    "username_claim",
    "email_claim",
)


def _mapping_rows(
    organization: Organization, provider: OidcProvider, spec: SsoSpec, path: str
) -> tuple[list[GroupMapping], list[str]]:
    rows: list[GroupMapping] = []
    errors: list[str] = []
    for i, entry in enumerate(spec.mappings or []):
        where = f"{path}.mappings[{i}]"
        row = GroupMapping(provider=provider, group=entry.group, role=entry.role)
        if entry.team is not None:
            row.team = Team.objects.filter(organization=organization, name=entry.team).first()
            if row.team is None:
                errors.append(f"{where}.team: no team {entry.team} in {organization.name}")
                continue
        if entry.project is not None:
            team_name, _, project_name = entry.project.partition("/")
            row.project = Project.objects.filter(
                team__organization=organization, team__name=team_name, name=project_name
            ).first()
            if row.project is None:
                errors.append(
                    f"{where}.project: no project {entry.project} (team/project) in "
                    f"{organization.name}"
                )
                continue
        try:
            row.clean()
        except ValidationError as exc:
            errors += [f"{where}: {message}" for message in exc.messages]
            continue
        if any(
            (r.group, r.role, r.team_id, r.project_id)
            == (row.group, row.role, row.team_id, row.project_id)
            for r in rows
        ):
            errors.append(f"{where}: the same row is listed twice")
            continue
        rows.append(row)
    return rows, errors


def sso_apply(*, organization: Organization, spec: SsoSpec, path: str = "sso") -> list[str]:
    """Create or update the organisation's provider and mapping; returns what changed
    (field names, never a secret's value). All or nothing: raises :class:`SsoConfigError`
    before writing anything."""
    errors: list[str] = []
    provider = OidcProvider.objects.filter(organization=organization).first()
    created = provider is None
    if provider is None:
        provider = OidcProvider(organization=organization)
        for field in ("issuer", "client_id"):
            if getattr(spec, field) is None:
                errors.append(f"{path}.{field}: required for a new provider")
    changed: list[str] = []
    for field in _FIELDS:
        value = getattr(spec, field)
        if value is not None and getattr(provider, field) != value:
            setattr(provider, field, value)
            changed.append(field)
    if spec.allowed_email_domains is not None:
        domains = ", ".join(d.strip().lower() for d in spec.allowed_email_domains)
        if provider.allowed_email_domains != domains:
            provider.allowed_email_domains = domains
            changed.append("allowed_email_domains")
    secret = None
    if spec.client_secret is not None:
        secret = spec.client_secret.get_secret_value()
    elif spec.client_secret_env is not None:
        secret = os.environ.get(spec.client_secret_env)
        if not secret:
            errors.append(f"{path}.client_secret_env: {spec.client_secret_env} is not set")
    if secret is not None and provider.client_secret != secret:
        provider.client_secret = secret
        changed.append("client_secret")
    if not errors:
        try:
            provider.full_clean(exclude=["organization"] if created else None)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors += [f"{path}.{field}: {m}" for m in messages]
    rows, row_errors = _mapping_rows(organization, provider, spec, path)
    errors += row_errors
    if errors:
        raise SsoConfigError(errors)
    if created or changed:
        provider.save()
    if spec.mappings is not None:
        wanted = {(r.group, r.role, r.team_id, r.project_id) for r in rows}
        have = {(m.group, m.role, m.team_id, m.project_id): m for m in provider.mappings.all()}
        if set(have) != wanted:
            changed.append("mappings")
            for key, mapping in have.items():
                if key not in wanted:
                    mapping.delete()
            for row in rows:
                if (row.group, row.role, row.team_id, row.project_id) not in have:
                    row.provider = provider
                    row.save()
    return ["created"] if created else changed


__all__ = ["MappingSpec", "SsoConfigError", "SsoSpec", "sso_apply"]
