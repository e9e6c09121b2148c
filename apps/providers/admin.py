"""Admin for providers (write-only credentials), models with prices, and deployments."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Model as DjangoModel
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import (
    ServiceSaveAdminMixin,
    WriteOnlySecretsAdminMixin,
    ms_text,
    usd_text,
)
from apps.core.forms import WriteOnlySecretsModelForm
from apps.core.services import Saved
from apps.identity.admin_scope import ScopedAdminMixin, ScopedInlineMixin
from apps.providers.models import Deployment, Model, ModelFallback, Provider
from apps.providers.selectors import deployment_health
from apps.providers.services import model_upsert, provider_options_validate, provider_upsert


class DeploymentInline(ScopedInlineMixin, admin.TabularInline):
    model = Deployment
    fields = ("provider", "upstream_model", "role", "weight", "priority", "tags", "is_active")
    autocomplete_fields = ("provider",)
    extra = 0


class ProviderDeploymentInline(ScopedInlineMixin, admin.TabularInline):
    """Read-only on the provider: deployments are edited on their model."""

    model = Deployment
    fields = ("model", "upstream_model", "role", "weight", "is_active")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Deployment]:
        return super().get_queryset(request).select_related("model")

    def has_add_permission(self, request: HttpRequest, obj: Provider | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Provider | None = None) -> bool:
        return False


class ProviderForm(WriteOnlySecretsModelForm):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "options" in cleaned and cleaned.get("kind"):
            try:  # the one check every door runs (odock_apply, provider_upsert)
                provider_options_validate(kind=cleaned["kind"], options=cleaned["options"])
            except ValidationError as exc:
                self.add_error(None, exc)
        return cleaned


@admin.register(Provider)
class ProviderAdmin(
    ScopedAdminMixin, ServiceSaveAdminMixin, WriteOnlySecretsAdminMixin, admin.ModelAdmin
):
    # The platform catalog: every administrative role reads it (they pick models in their
    # rules); only platform admins change it.
    view_capability = None
    write_capability = None
    form = ProviderForm
    list_display = ("name", "kind", "api_base", "api_key_set", "is_active")
    list_filter = ("kind", "is_active")
    search_fields = ("name", "api_base")
    inlines = (ProviderDeploymentInline,)

    @admin.display(description="API key set", boolean=True)
    def api_key_set(self, obj: Provider) -> bool:
        return bool(obj.api_key)

    def save_service(
        self, *, stored: DjangoModel | None, obj: DjangoModel, data: dict[str, Any]
    ) -> Saved[Provider]:
        return provider_upsert(name=data["name"], data=data, provider=stored or obj)


class ModelFallbackInline(ScopedInlineMixin, admin.TabularInline):
    model = ModelFallback
    fk_name = "model"
    fields = ("position", "fallback")
    autocomplete_fields = ("fallback",)
    extra = 0
    verbose_name = "fallback model"
    verbose_name_plural = "fallback models (tried in position order)"


@admin.register(Model)
class PublicModelAdmin(ScopedAdminMixin, ServiceSaveAdminMixin, admin.ModelAdmin):
    """Models apps ask for, with prices and routing; deployments and fallbacks inline."""

    # The platform catalog: every administrative role reads it (they pick models in their
    # rules); only platform admins change it.
    view_capability = None
    write_capability = None

    list_display = ("name", "input_price", "output_price", "routing_strategy", "is_active")
    list_filter = (
        "is_active",
        "routing_strategy",
        "deployments__provider__kind",
        "deployments__provider",
    )
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "input_per_mtok", "output_per_mtok", "is_active")}),
        (
            "Routing",
            {
                "fields": (
                    "routing_strategy",
                    "max_attempts",
                    "attempt_timeout_seconds",
                    "fallback_on_error",
                    "fallback_on_context_window",
                    "fallback_on_content_policy",
                ),
                "description": "How deployments are chosen, and when the request moves on to "
                "the fallback models below. Blank numbers take the gateway defaults.",
            },
        ),
    )
    inlines = (DeploymentInline, ModelFallbackInline)

    @admin.display(description="input / 1M tokens", ordering="input_per_mtok")
    def input_price(self, obj: Model) -> str:
        return usd_text(obj.input_per_mtok)

    @admin.display(description="output / 1M tokens", ordering="output_per_mtok")
    def output_price(self, obj: Model) -> str:
        return usd_text(obj.output_per_mtok)

    def save_service(
        self, *, stored: DjangoModel | None, obj: DjangoModel, data: dict[str, Any]
    ) -> Saved[Model]:
        return model_upsert(name=data["name"], data=data, model=stored or obj)


@admin.register(Deployment)
class DeploymentAdmin(ScopedAdminMixin, ServiceSaveAdminMixin, admin.ModelAdmin):
    """The deployment list is also the health board: circuit state, last-minute error
    rate and latency as the gateway processes report them."""

    # The platform catalog: every administrative role reads it (they pick models in their
    # rules); only platform admins change it.
    view_capability = None
    write_capability = None

    # The health board fits a 1366 px screen; weight, priority and the upstream model's
    # name are on each deployment's page.
    list_display = (
        "model",
        "provider",
        "role",
        "is_active",
        "circuit",
        "error_rate",
        "latency",
        "in_flight",
    )
    list_filter = (
        "role",
        "is_active",
        "provider__kind",
        ("provider", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("model", "provider")
    search_fields = ("model__name", "provider__name", "upstream_model")
    autocomplete_fields = ("model", "provider")

    def get_changelist_instance(self, request: HttpRequest):
        changelist = super().get_changelist_instance(request)
        # One health read for the page, not one per row; kept on the rows of this request.
        health = deployment_health([d.pk for d in changelist.result_list])
        for deployment in changelist.result_list:
            deployment._odock_health = health.get(deployment.pk) or {}
        return changelist

    def _figures(self, obj: Deployment) -> dict:
        return getattr(obj, "_odock_health", {})

    @admin.display(description="circuit")
    def circuit(self, obj: Deployment) -> str:
        return self._figures(obj).get("breaker") or "closed"

    @admin.display(description="errors (last min)")
    def error_rate(self, obj: Deployment) -> str:
        figures = self._figures(obj)
        rate = figures.get("error_rate")
        if rate is None:
            return "no traffic"
        return f"{rate * 100:.1f}% of {figures['ok'] + figures['failed']}"

    @admin.display(description="latency (avg ms)")
    def latency(self, obj: Deployment) -> str:
        value = self._figures(obj).get("latency_ms")
        return ms_text(value)

    @admin.display(description="in flight")
    def in_flight(self, obj: Deployment) -> int:
        return int(self._figures(obj).get("in_flight") or 0)
