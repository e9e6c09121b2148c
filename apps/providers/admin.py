"""Admin for providers (write-only credentials), models with prices, and deployments."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin import WriteOnlySecretsAdminMixin
from apps.core.forms import WriteOnlySecretField, WriteOnlySecretsModelForm
from apps.providers.models import Deployment, Model, Provider


class ProviderForm(WriteOnlySecretsModelForm):
    """Only to name the field "API key"; the admin supplies the model and the other fields."""

    api_key = WriteOnlySecretField(label="API key")


class DeploymentInline(admin.TabularInline):
    model = Deployment
    fields = ("provider", "upstream_model", "role", "weight", "tags", "is_active")
    autocomplete_fields = ("provider",)
    extra = 0


class ProviderDeploymentInline(admin.TabularInline):
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


@admin.register(Provider)
class ProviderAdmin(WriteOnlySecretsAdminMixin, admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "api_base", "api_key_set", "is_active", "created_at")
    list_filter = ("kind", "is_active")
    search_fields = ("name", "api_base")
    inlines = (ProviderDeploymentInline,)

    @admin.display(description="API key set", boolean=True)
    def api_key_set(self, obj: Provider) -> bool:
        return bool(obj.api_key)


@admin.register(Model)
class PublicModelAdmin(admin.ModelAdmin):
    """Models apps ask for, with prices; their deployments are edited inline."""

    list_display = ("name", "input_per_mtok", "output_per_mtok", "is_active", "created_at")
    list_filter = ("is_active", "deployments__provider__kind", "deployments__provider")
    search_fields = ("name",)
    inlines = (DeploymentInline,)


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("model", "provider", "upstream_model", "role", "weight", "is_active")
    list_filter = (
        "role",
        "is_active",
        "provider__kind",
        ("provider", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("model", "provider")
    search_fields = ("model__name", "provider__name", "upstream_model")
    autocomplete_fields = ("model", "provider")
