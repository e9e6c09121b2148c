"""Budgets, rate limits and model access, attachable at any level of the hierarchy.

Each rule names exactly one level (organization, team, project or key). Budgets, rate
limits and model access may also name a person (``user``): they then govern every key
that person owns, across projects. End users (the application's own customers, not login
accounts) get limits through ``EndUserPolicy``.
"""

from __future__ import annotations

import functools
import operator
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from apps.keys.models import VirtualKey
from apps.providers.models import Model
from apps.tenancy.models import Organization, Project, Team

LEVELS = ("organization", "team", "project", "key")
# The levels of the rules a person can carry (budgets, rate limits, model access).
USER_LEVELS = (*LEVELS, "user")


def _exactly_one_level(name: str, levels: tuple[str, ...] = LEVELS) -> models.CheckConstraint:
    one = [Q(**{f"{level}__isnull": level != chosen for level in levels}) for chosen in levels]
    return models.CheckConstraint(condition=functools.reduce(operator.or_, one), name=name)


def level_label(field: str, obj: object) -> str:
    """``org:acme``, ``team:search``, ``user:alice``: how refusals and reports name a level."""
    if field == "user":
        return f"user:{obj.get_username()}"  # type: ignore[attr-defined]
    return f"{'org' if field == 'organization' else field}:{obj.name}"  # type: ignore[attr-defined]


class ScopedRule(models.Model):
    """Abstract: a rule attached to exactly one level of the hierarchy."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    key = models.ForeignKey(
        VirtualKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    # The level fields this rule type has (``UserScopedRule`` adds ``user``).
    levels: tuple[str, ...] = LEVELS

    class Meta:
        abstract = True

    def clean(self) -> None:
        set_levels = [level for level in self.levels if getattr(self, f"{level}_id") is not None]
        if len(set_levels) != 1:
            raise ValidationError("Attach the rule to exactly one level.")

    @property
    def level_field(self) -> str | None:
        """The field naming the rule's level (``organization`` … ``user``), or None."""
        return next((f for f in self.levels if getattr(self, f"{f}_id") is not None), None)

    @property
    def level(self) -> str:
        """e.g. ``team:search`` — the form refusals and reports name a level in."""
        field = self.level_field
        return "unattached" if field is None else level_label(field, getattr(self, field))


class UserScopedRule(ScopedRule):
    """Abstract: a rule that may also be attached to a person (a fifth level).

    A person's rule governs every key they own (``VirtualKey.owner``), wherever the key
    sits, in addition to the key's own levels: a user's budget counts the spend of all
    their keys. Only budgets, rate limits and model access take it; routing, aliases,
    guardrails and capture belong to where traffic comes from, not to who owns the key,
    so those rule types keep the four hierarchy levels (no ``user`` column at all)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="A person: the rule governs every key they own.",
    )

    levels = USER_LEVELS

    class Meta:
        abstract = True

    def clean(self) -> None:
        """A child's limit can only be tighter than its parents' (every door saves
        through ``full_clean``: the admin, the API, ``odock_apply``, the portal)."""
        super().clean()
        from apps.identity.limits import parent_refusal  # it reads these models

        refusal = parent_refusal(self)
        if refusal is not None:
            raise ValidationError(refusal)


class BudgetPeriod(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly"
    TOTAL = "total", "Total (never resets)"


def default_thresholds() -> list[int]:
    return [50, 80, 100]


class Budget(UserScopedRule):
    model = models.ForeignKey(
        Model, null=True, blank=True, on_delete=models.CASCADE, help_text="Blank: all models."
    )
    limit_usd = models.DecimalField(
        max_digits=14, decimal_places=6, validators=[MinValueValidator(Decimal("0"))]
    )
    period = models.CharField(
        max_length=16, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTHLY
    )
    hard = models.BooleanField(
        default=True, help_text="Hard: refuse past the limit. Soft: alert only."
    )
    alert_thresholds = models.JSONField(
        default=default_thresholds, blank=True, help_text="Percentages that send an alert."
    )

    class Meta:
        constraints = [_exactly_one_level("budget_exactly_one_level", USER_LEVELS)]

    def __str__(self) -> str:
        # ``100``, not the column's ``100.000000`` (admin inline rows print this).
        limit = self.limit_usd
        shown = f"{Decimal(limit).normalize():f}" if limit is not None else "?"
        return f"{self.level} {shown} USD {self.period}"


class RateLimit(UserScopedRule):
    model = models.ForeignKey(
        Model, null=True, blank=True, on_delete=models.CASCADE, help_text="Blank: all models."
    )
    rpm = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tpm = models.PositiveIntegerField("tokens per minute", null=True, blank=True)
    max_concurrency = models.PositiveIntegerField("concurrent requests", null=True, blank=True)

    class Meta:
        constraints = [_exactly_one_level("ratelimit_exactly_one_level", USER_LEVELS)]

    def __str__(self) -> str:
        return f"{self.level} rpm={self.rpm} tpm={self.tpm} conc={self.max_concurrency}"


class ModelAccess(UserScopedRule):
    """Allows one model at one level. A level with no rows allows whatever its parent allows;
    a level with rows allows only those (intersected with every ancestor's list)."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="access_rules")

    class Meta:
        verbose_name = "model access rule"
        constraints = [_exactly_one_level("modelaccess_exactly_one_level", USER_LEVELS)]

    def __str__(self) -> str:
        return f"{self.level} may use {self.model.name}"


class DeploymentTagRule(ScopedRule):
    """Data-residency routing: requests under this level may only be served by deployments
    whose ``tag`` is one of ``allowed_values``. Rules at several levels all apply (the
    allowed values are intersected); a deployment without the tag never matches."""

    tag = models.CharField(max_length=64, help_text='e.g. "region"')
    allowed_values = models.JSONField(help_text='e.g. ["eu", "ch"]')

    class Meta:
        verbose_name = "deployment tag rule"
        constraints = [_exactly_one_level("deploymenttagrule_exactly_one_level")]

    def __str__(self) -> str:
        return f"{self.level} requires {self.tag} in {', '.join(self.allowed_values or [])}"

    def clean(self) -> None:
        super().clean()
        values = self.allowed_values
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            raise ValidationError({"allowed_values": "A non-empty list of strings."})


ALIAS_PATTERN = RegexValidator(
    r"^[A-Za-z0-9][-A-Za-z0-9_.:/@]*\*?$",
    "An exact model name, or a prefix ending in one * (e.g. claude-sonnet-*).",
)


class ModelAlias(ScopedRule):
    """Maps a name clients send (e.g. Claude Code's ``claude-sonnet-5``) to a served model.

    ``alias`` is an exact name or a prefix with one trailing ``*`` so dated forms
    (``claude-sonnet-5-20261001``) match. Per alias the nearest level wins (key, project,
    team, organisation); an exact alias beats a pattern, a longer pattern a shorter one.
    An alias may not be a served model's own name: a model's name always means that model,
    so an alias can never silently redirect traffic meant for it.
    """

    alias = models.CharField(max_length=200, validators=[ALIAS_PATTERN])
    model = models.ForeignKey(
        Model, on_delete=models.CASCADE, related_name="aliases", help_text="The served model."
    )

    class Meta:
        verbose_name = "model alias"
        verbose_name_plural = "model aliases"
        constraints = [
            _exactly_one_level("modelalias_exactly_one_level"),
            *(
                models.UniqueConstraint(
                    fields=[level, "alias"],
                    condition=Q(**{f"{level}__isnull": False}),
                    name=f"modelalias_once_per_{level}",
                    violation_error_message="This level already has this alias.",
                )
                for level in LEVELS
            ),
        ]

    def __str__(self) -> str:
        return f"{self.level}: {self.alias} → {self.model.name}"

    def clean(self) -> None:
        super().clean()
        if self.alias and Model.objects.filter(name=self.alias).exists():
            raise ValidationError(
                {"alias": f"'{self.alias}' is a model's own name; an alias may not shadow it."}
            )


# An end-user id as applications send it (``x-odock-end-user``, OpenAI's ``user``,
# Anthropic's ``metadata.user_id``): an opaque id, an email, a hash. Bounded so it can
# key a counter and a report column.
END_USER_MAX_LENGTH = 128
END_USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+=:/-]{0,127}$"
END_USER_MATCH = RegexValidator(
    r"^(\*|[A-Za-z0-9][A-Za-z0-9._@+=:/-]{0,126}\*?)$",
    "An end-user id, a prefix ending in one * (e.g. trial-*), or * for every end user.",
)


class EndUserPolicy(models.Model):
    """Limits each end user of an organisation carries: the application's own customers,
    named per request, never login accounts.

    ``end_user`` is an exact id, a prefix ending in ``*`` or ``*`` alone. Every end user
    matching it gets counters of their own (a ``trial-*`` budget of 1 USD gives each trial
    user 1 USD, not all of them together). One policy applies per end user: an exact id
    beats a pattern, a longer pattern a shorter one. Enforced in addition to the key's
    levels, atomically with them."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="end_user_policies"
    )
    end_user = models.CharField(
        "end user",
        max_length=END_USER_MAX_LENGTH,
        validators=[END_USER_MATCH],
        help_text="An end-user id, a prefix ending in * (trial-*), or * for every end user.",
    )
    limit_usd = models.DecimalField(
        "budget (USD)",
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Blank: no budget.",
    )
    period = models.CharField(
        max_length=16, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTHLY
    )
    hard = models.BooleanField(
        default=True, help_text="Hard: refuse past the budget. Soft: count only."
    )
    rpm = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tpm = models.PositiveIntegerField("tokens per minute", null=True, blank=True)
    max_concurrency = models.PositiveIntegerField("concurrent requests", null=True, blank=True)

    class Meta:
        verbose_name = "end-user policy"
        verbose_name_plural = "end-user policies"
        ordering = ["organization_id", "end_user"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "end_user"],
                name="enduserpolicy_once_per_org",
                violation_error_message="This organisation already has a policy for this end user.",
            )
        ]

    def __str__(self) -> str:
        return f"end_user:{self.end_user} in {self.organization.name}"

    def clean(self) -> None:
        if all(v is None for v in (self.limit_usd, self.rpm, self.tpm, self.max_concurrency)):
            raise ValidationError("Set a budget or at least one rate limit.")


class BudgetAlert(models.Model):
    """One alert per budget, period and threshold: the unique constraint makes sending
    idempotent even if Redis (which detects the crossing) was flushed."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_key = models.CharField(max_length=16)
    threshold = models.PositiveSmallIntegerField()
    limit_usd = models.DecimalField(max_digits=14, decimal_places=6)
    spent_usd = models.DecimalField(max_digits=20, decimal_places=12)
    created_at = models.DateTimeField(auto_now_add=True)
    webhook_status = models.PositiveSmallIntegerField(null=True, blank=True)
    emailed = models.BooleanField(default=False)
    delivered_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_key", "threshold"], name="budget_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.period_key} {self.threshold}%"


class BudgetSpend(models.Model):
    """Settled spend of one budget in one period, rolled up from the request log.

    The durable figure the admin shows and reconciliation compares Redis against; a row
    is ``final`` once its period has ended and late records (spool replays) had time to
    land, after which roll-ups leave it alone."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="spend")
    period_key = models.CharField(max_length=16)
    period_start = models.DateTimeField(null=True, blank=True, help_text="Blank: total.")
    period_end = models.DateTimeField(null=True, blank=True, help_text="Blank: never ends.")
    spent_usd = models.DecimalField(max_digits=20, decimal_places=12, default=Decimal(0))
    requests = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()
    final = models.BooleanField(default=False)
    redis_usd = models.DecimalField(
        max_digits=20,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="Settled spend in Redis at the last reconciliation, before it was corrected.",
    )
    drift_usd = models.DecimalField(
        max_digits=20,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="Redis minus database at the last reconciliation (recent requests included).",
    )

    class Meta:
        verbose_name_plural = "budget spend"
        ordering = ["budget_id", "-period_key"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_key"], name="budget_spend_once")
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.period_key}: {self.spent_usd} USD"
