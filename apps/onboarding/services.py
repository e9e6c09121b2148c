"""The guided flows' writes: several objects created in one transaction through the
existing services, so the rules of every door hold here too (``full_clean`` on each row,
a child budget no looser than its parents', provider options checked by the registry) and
the change trail records each created row (its signal receivers run in the same
transaction, with the request's actor and role).

Each function raises ``ValidationError`` keyed by the *form's* field names, so the view
can show the error beside the field that caused it; when it raises, nothing was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from apps.core.services import model_save
from apps.keys.services import IssuedKey, key_issue
from apps.policies.models import Budget, BudgetPeriod, RateLimit
from apps.providers.models import Deployment, Model, Provider
from apps.providers.services import model_upsert, provider_upsert
from apps.tenancy.models import Organization, Project, Team
from apps.tenancy.services import project_upsert, team_upsert


def _refiled(exc: ValidationError, fields: Mapping[str, str], default: str) -> ValidationError:
    """``exc`` with each model field's errors under the form field that fed it (``fields``:
    model field → form field); errors of other fields and non-field errors go to
    ``default``."""
    if not hasattr(exc, "error_dict"):
        return ValidationError({default: exc.messages})
    refiled: dict[str, list[str]] = {}
    for name, errors in exc.message_dict.items():
        target = default if name == NON_FIELD_ERRORS else fields.get(name, default)
        refiled.setdefault(target, []).extend(errors)
    return ValidationError(refiled)


@dataclass(frozen=True, slots=True)
class TeamOnboarded:
    team: Team
    budget: Budget
    rate_limit: RateLimit | None
    project: Project
    issued: IssuedKey  # its secret is shown once, on the page answering the POST


@transaction.atomic
def team_onboard(
    *,
    organization: Organization,
    team_name: str,
    monthly_budget_usd: Decimal,
    rpm: int | None,
    project_name: str,
    key_name: str,
) -> TeamOnboarded:
    """A new team of ``organization`` with a hard monthly budget (and a requests-per-minute
    limit when ``rpm`` is given), its first project and that project's first key.

    The team must be new: an existing name is refused rather than updated (the flow
    creates; the admin edits). A budget looser than one of the organisation's hard
    budgets is refused with the organisation's named (``apps.identity.limits``).
    """
    if Team.objects.filter(organization=organization, name=team_name).exists():
        raise ValidationError(
            {"team_name": f"{organization.name} already has a team named {team_name!r}."}
        )
    try:
        team = team_upsert(organization=organization, name=team_name, data={}).instance
    except ValidationError as exc:
        raise _refiled(exc, {"name": "team_name"}, "team_name") from None
    try:
        budget = model_save(
            instance=Budget(team=team),
            data={"limit_usd": monthly_budget_usd, "period": BudgetPeriod.MONTHLY, "hard": True},
        ).instance
    except ValidationError as exc:
        raise _refiled(exc, {}, "monthly_budget_usd") from None
    rate_limit = None
    if rpm is not None:
        try:
            rate_limit = model_save(instance=RateLimit(team=team), data={"rpm": rpm}).instance
        except ValidationError as exc:
            raise _refiled(exc, {}, "rpm") from None
    try:
        project = project_upsert(team=team, name=project_name, data={}).instance
    except ValidationError as exc:
        raise _refiled(exc, {}, "project_name") from None
    try:
        issued = key_issue(project=project, name=key_name)
    except ValidationError as exc:
        raise _refiled(exc, {}, "key_name") from None
    return TeamOnboarded(team, budget, rate_limit, project, issued)


@dataclass(frozen=True, slots=True)
class ProviderOnboarded:
    provider: Provider
    model: Model
    deployment: Deployment


PROVIDER_FIELDS = {
    "name": "provider_name",
    "kind": "kind",
    "api_base": "api_base",
    "api_key": "api_key",
    "options": "options",
}
MODEL_FIELDS = {
    "name": "model_name",
    "input_per_mtok": "input_per_mtok",
    "output_per_mtok": "output_per_mtok",
}


@transaction.atomic
def provider_onboard(
    *,
    provider_name: str,
    kind: str,
    api_base: str,
    api_key: str,
    options: Mapping[str, Any],
    model_name: str,
    upstream_model: str,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
) -> ProviderOnboarded:
    """A new provider (its API key stored encrypted, never shown back), a new public model
    with its prices, and the deployment serving the model on that provider.

    Existing names are refused, not updated: an onboarding never changes the credential
    or prices other deployments already use.
    """
    if Provider.objects.filter(name=provider_name).exists():
        raise ValidationError({"provider_name": f"A provider named {provider_name!r} exists."})
    if Model.objects.filter(name=model_name).exists():
        raise ValidationError(
            {"model_name": f"A model named {model_name!r} exists; add a deployment to it there."}
        )
    data = {"kind": kind, "api_base": api_base, "api_key": api_key, "options": dict(options)}
    try:
        provider = provider_upsert(name=provider_name, data=data).instance
    except ValidationError as exc:
        raise _refiled(exc, PROVIDER_FIELDS, "provider_name") from None
    try:
        model = model_upsert(
            name=model_name,
            data={"input_per_mtok": input_per_mtok, "output_per_mtok": output_per_mtok},
        ).instance
    except ValidationError as exc:
        raise _refiled(exc, MODEL_FIELDS, "model_name") from None
    try:
        deployment = model_save(
            instance=Deployment(model=model, provider=provider, upstream_model=upstream_model),
            data={},
        ).instance
    except ValidationError as exc:
        raise _refiled(exc, {}, "upstream_model") from None
    return ProviderOnboarded(provider, model, deployment)
