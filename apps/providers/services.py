"""Writes to providers, models (with prices and routing), deployments and fallbacks.

The admin, the management API and ``odock_apply`` all write through these, so a provider's
``options`` are checked by one function and every write is ``full_clean()``-ed and saved
field by field (the change trail records exactly what changed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError

from apps.core.services import Saved, SyncResult, model_save, rows_sync

# Each kind's option rules come from the provider registry (one declaration per kind).
from apps.gateway.providers.registry import options_errors
from apps.providers.models import Deployment, Model, ModelFallback, Provider


def provider_options_validate(*, kind: str, options: Any) -> None:
    """Refuse ``options`` the gateway cannot read for a provider of ``kind``; raises
    ValidationError on the ``options`` field.

    Every kind takes a JSON object of settings (``api_version``, ``region``, …), compiled
    into the snapshot as string pairs; ``options_errors`` adds a kind's own rules. Every
    door (admin form, odock_apply's check, the services) calls this one function.
    """
    if not isinstance(options, Mapping):
        raise ValidationError({"options": "Provider options must be a JSON object."})
    # Provider.options has always been a free-form object (keys the kind does not read are
    # stored as given: tests/policies/test_odock_apply.py), so the doors refuse only what
    # the gateway would misread: an unknown kind, or one of the kind's own options given a
    # value that is not text.
    errors = options_errors(kind, options, allow_unknown=True)
    if errors:
        raise ValidationError({"options": errors})


def provider_field_validate(*, name: str, value: Any) -> None:
    """One Provider field's own rules (e.g. ``api_base``'s URL checks), for checking a file
    before anything is written."""
    Provider._meta.get_field(name).clean(value, None)


def provider_upsert(
    *, name: str, data: Mapping[str, Any], provider: Provider | None = None
) -> Saved[Provider]:
    """Create provider ``name`` or update the fields of ``data`` that differ.

    ``provider`` is the stored row when the caller already has it (the admin, where the
    name itself may be edited); otherwise the row is found by name.
    """
    if provider is None:
        provider = Provider.objects.filter(name=name).first() or Provider(name=name)
    data = {**data, "name": name}
    if "options" in data:
        provider_options_validate(kind=data.get("kind", provider.kind), options=data["options"])
    return model_save(instance=provider, data=data)


def model_upsert(*, name: str, data: Mapping[str, Any], model: Model | None = None) -> Saved[Model]:
    """Create public model ``name`` or update its price, routing and active flag
    (``model``: the stored row when the caller already has it)."""
    if model is None:
        model = Model.objects.filter(name=name).first() or Model(name=name)
    return model_save(instance=model, data={**data, "name": name})


def deployments_sync(*, model: Model, deployments: Sequence[Mapping[str, Any]]) -> SyncResult:
    """Make ``model``'s deployments exactly ``deployments`` (each with ``provider`` and
    ``upstream_model``, matched on both, plus the values to set); others are deleted."""
    desired = [
        (
            (d["provider"].pk, d["upstream_model"]),
            {k: v for k, v in d.items() if k not in ("provider", "upstream_model")},
        )
        for d in deployments
    ]
    providers = {d["provider"].pk: d["provider"] for d in deployments}
    return rows_sync(
        existing=model.deployments.all(),
        natural=lambda row: (row.provider_id, row.upstream_model),
        desired=desired,
        new=lambda key: Deployment(model=model, provider=providers[key[0]], upstream_model=key[1]),
        label=lambda row: f"deployment {row}",
    )


def model_fallbacks_sync(*, model: Model, fallbacks: Sequence[Model]) -> SyncResult:
    """Make ``model``'s fallback models exactly ``fallbacks``, in this order."""
    by_pk = {f.pk: f for f in fallbacks}
    return rows_sync(
        existing=ModelFallback.objects.filter(model=model).order_by("pk"),
        natural=lambda row: row.fallback_id,
        desired=[(f.pk, {"position": i}) for i, f in enumerate(fallbacks)],
        new=lambda pk: ModelFallback(model=model, fallback=by_pk[pk]),
        label=lambda row: f"fallback {row}",
        saved_label=lambda i, _row: f"fallback {model.name} → {fallbacks[i].name}",
    )
