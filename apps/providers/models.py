"""Providers (upstream accounts), public models with prices, and deployments between them."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from apps.core.fields import EncryptedTextField
from apps.core.secrets import SecretChangeTimes, secret_changed_at_field
from apps.core.validators import validate_upstream_url
from apps.gateway.providers.registry import choices as provider_choices

# The provider kinds are the gateway's registry (one package per provider); the admin's
# choices and the model field derive from it, so adding a provider touches no model.
ProviderKind = models.TextChoices(
    "ProviderKind", [(kind.upper(), (kind, label)) for kind, label in provider_choices()]
)


class Provider(SecretChangeTimes, models.Model):
    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=ProviderKind.choices)
    api_base = models.CharField(
        max_length=500,
        validators=[validate_upstream_url],
        help_text="e.g. https://api.openai.com/v1 or http://vllm:8000/v1",
    )
    api_key = EncryptedTextField(
        "API key", blank=True, help_text="Encrypted at rest; never shown back."
    )
    api_key_changed_at = secret_changed_at_field()
    options = models.JSONField(
        default=dict, blank=True, help_text="Provider-specific settings, e.g. api_version, region."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RoutingStrategy(models.TextChoices):
    WEIGHTED = "weighted", "Weighted random"
    PRIORITY = "priority", "Ordered priority"
    LOWEST_LATENCY = "lowest_latency", "Lowest latency (moving average)"
    LEAST_BUSY = "least_busy", "Least busy (fewest requests in flight)"


class Model(models.Model):
    """A public model name apps ask for; served by one or more deployments.

    The routing settings say how its deployments are chosen and when the request moves on
    to its fallback models; blank numbers take the gateway-wide defaults.
    """

    name = models.CharField(max_length=200, unique=True)
    input_per_mtok = models.DecimalField(
        "input price (USD per 1M tokens)",
        max_digits=14,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    output_per_mtok = models.DecimalField(
        "output price (USD per 1M tokens)",
        max_digits=14,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    routing_strategy = models.CharField(
        max_length=20, choices=RoutingStrategy.choices, default=RoutingStrategy.WEIGHTED
    )
    max_attempts = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Upstream attempts per request, retries and fallbacks included. "
        "Blank: the gateway default.",
    )
    attempt_timeout_seconds = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text="Per attempt: the whole answer, or a stream's first byte. "
        "Blank: the gateway default.",
    )
    fallback_on_error = models.BooleanField(
        default=True,
        help_text="Try the fallback models when every deployment failed (errors, timeouts).",
    )
    fallback_on_context_window = models.BooleanField(
        default=True,
        help_text="Try the fallback models when the prompt is too long for this model.",
    )
    fallback_on_content_policy = models.BooleanField(
        default=False,
        help_text="Try the fallback models when the provider refuses the prompt on content policy.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelFallback(models.Model):
    """Another public model to try, in ``position`` order, when this one cannot answer."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="fallbacks")
    fallback = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["model", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["model", "fallback"], name="model_fallback_unique"),
            models.CheckConstraint(
                condition=~models.Q(model=models.F("fallback")), name="model_fallback_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} → {self.fallback}"

    def clean(self) -> None:
        if self.model_id is not None and self.model_id == self.fallback_id:
            raise ValidationError({"fallback": "A model cannot be its own fallback."})


class DeploymentRole(models.TextChoices):
    PRIMARY = "primary", "Primary"
    FALLBACK = "fallback", "Fallback"


class Deployment(models.Model):
    """One way to serve a model: a provider and the model's name there."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="deployments")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    priority = models.PositiveSmallIntegerField(
        default=0, help_text="Ordered-priority routing: lower is tried first."
    )
    role = models.CharField(
        max_length=16, choices=DeploymentRole.choices, default=DeploymentRole.PRIMARY
    )
    tags = models.JSONField(default=dict, blank=True, help_text='e.g. {"region": "eu"}')
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["model__name", "role", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "upstream_model"], name="deployment_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model.name} → {self.provider.name}:{self.upstream_model}"
