"""Admin for budgets, rate limits and model access, standalone and as inlines on each level;
read-only budget alerts; and the spend displays the level and key pages share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms.formsets import INITIAL_FORM_COUNT, TOTAL_FORM_COUNT
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.audit.models import ContentCapture
from apps.core.admin import ServiceSaveAdminMixin, usd_text
from apps.core.money import usd_display
from apps.gateway.governance import period_bounds
from apps.guardrails.models import GuardrailRule
from apps.identity.admin_scope import (
    ORGANIZATION_ID_PATHS,
    RULE_PATHS,
    ScopedAdminMixin,
    ScopedInlineMixin,
    level_paths,
)
from apps.policies.models import (
    LEVELS,
    USER_LEVELS,
    Budget,
    BudgetAlert,
    DeploymentTagRule,
    EndUserPolicy,
    ModelAccess,
    ModelAlias,
    RateLimit,
    ScopedRule,
)
from apps.policies.spend import budget_spent_usd, budgets_spent_usd

RULE_MODELS: tuple[type[ScopedRule], ...] = (
    Budget,
    RateLimit,
    ModelAccess,
    ModelAlias,
    DeploymentTagRule,
    ContentCapture,
    GuardrailRule,
)
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency")

# --- Spend display helpers (shared by the level, key and budget admins) ---------------


def usd(value: Decimal | str) -> str:
    """Money for people, by the one rule every page follows (``apps.core.money``); the
    pages write "USD" after it."""
    return usd_display(value, symbol=False)


def percent_used(spent: Decimal | str, limit: Decimal | str) -> Decimal | None:
    """Share of the limit spent, to one decimal; None for a zero limit (no share to show:
    any spend at all is over it)."""
    limit = Decimal(limit)
    if limit <= 0:
        return None
    return (Decimal(spent) * 100 / limit).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def percent_text(percent: Decimal | None) -> str:
    return "—" if percent is None else f"{percent}%"


def period_end_text(end: datetime | str | None) -> str:
    """Periods are UTC calendar boundaries (``period_bounds``), so say UTC, not local time."""
    if end is None:
        return "never (total)"
    if isinstance(end, str):
        end = datetime.fromisoformat(end)
    return f"{end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    budget: Budget
    spent_usd: Decimal
    percent: Decimal | None
    period_key: str
    period_ends: datetime | None


def budget_usage_at_level(level: str, obj: models.Model) -> list[BudgetUsage]:
    """Every budget attached to one level, with this period's settled spend (one aggregate
    per budget: a level carries a handful of budgets)."""
    now = datetime.now(UTC)
    usages = []
    budgets = list(Budget.objects.filter(**{level: obj}).select_related("model").order_by("pk"))
    spent_of = budgets_spent_usd(budgets, now)
    for budget in budgets:
        spent = spent_of[budget.pk]
        period_key, ends = period_bounds(budget.period, now)
        usages.append(
            BudgetUsage(budget, spent, percent_used(spent, budget.limit_usd), period_key, ends)
        )
    return usages


def budget_usage_table(usages: list[BudgetUsage]) -> SafeString:
    """A compact read-only table of budgets against their spend."""
    if not usages:
        return format_html("<p>{}</p>", "No budget is attached at this level.")
    head = ("Model", "Period", "Spent", "Limit", "% used", "Period ends", "Enforcement")
    rows = format_html_join(
        "\n",
        '<tr class="budget-usage"><td>{}</td><td>{} ({})</td><td>{} USD</td><td>{} USD</td>'
        "<td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                u.budget.model.name if u.budget.model_id else "all models",
                u.budget.get_period_display(),
                u.period_key,
                usd(u.spent_usd),
                usd(u.budget.limit_usd),
                percent_text(u.percent),
                period_end_text(u.period_ends),
                "hard (refuses past the limit)" if u.budget.hard else "soft (alerts only)",
            )
            for u in usages
        ),
    )
    header = format_html_join("", "<th>{}</th>", ((h,) for h in head))
    return format_html(
        '<table class="odock-spend"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        header,
        rows,
    )


# --- Forms ----------------------------------------------------------------------------


class PlainDecimalField(forms.DecimalField):
    """A decimal input that shows ``100`` rather than ``100.000000`` (the column's scale)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"{value.normalize():f}"
        return super().prepare_value(value)


class ThresholdsField(forms.CharField):
    """Alert thresholds as people type them, ``50, 80, 100`` (percentages of the limit),
    stored as the sorted list of whole numbers the compiler and ``odock_apply`` read."""

    default_error_messages = {
        "invalid": "Enter whole percentages separated by commas, e.g. 50, 80, 100.",
        "not_positive": "Each threshold must be a whole percentage above 0 (got %(value)s).",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("encoder", None)  # what JSONField.formfield passes on
        kwargs.pop("decoder", None)
        kwargs.pop("max_length", None)
        kwargs.setdefault(
            "help_text", "Percentages of the limit that send an alert, e.g. 50, 80, 100."
        )
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("placeholder", "50, 80, 100")
        self.widget.attrs.setdefault("size", "14")

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        if isinstance(value, str) and value.startswith("["):  # a JSON list, re-shown
            return value.strip("[]").replace(",", ", ").replace("  ", " ")
        return "" if value is None else str(value)

    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        text = (value or "").strip().strip("[]")
        if not text:
            return []
        numbers = set()
        for part in text.replace(";", ",").replace(" ", ",").split(","):
            part = part.strip().rstrip("%")
            if not part:
                continue
            try:
                number = int(part)
            except ValueError:
                raise ValidationError(self.error_messages["invalid"], code="invalid") from None
            if number <= 0:
                raise ValidationError(
                    self.error_messages["not_positive"], code="not_positive", params={"value": part}
                )
            numbers.add(number)
        return sorted(numbers)

    def validate(self, value: Any) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial or []) != self.to_python(data)
        except ValidationError:
            return True


class BudgetForm(forms.ModelForm):
    """A budget's limit shown as typed and its alert thresholds as a list of numbers."""

    class Meta:
        model = Budget
        fields = (*USER_LEVELS, "model", "limit_usd", "period", "hard", "alert_thresholds")
        field_classes = {"limit_usd": PlainDecimalField, "alert_thresholds": ThresholdsField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The default thresholds are a callable (a fresh list), so Django would compare an
        # extra row against a hidden "initial-" input; a post without it (a script, a test
        # client) would read as changed and be refused for its empty limit. The default is
        # constant: compare against it directly.
        thresholds = self.fields.get("alert_thresholds")  # absent on a read-only page
        if thresholds is not None:
            thresholds.show_hidden_initial = False


class RateLimitForm(forms.ModelForm):
    """A rate limit with no limit set would list as a rule yet limit nothing."""

    class Meta:
        model = RateLimit
        fields = (*USER_LEVELS, "model", *LIMIT_FIELDS)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        present = [name for name in LIMIT_FIELDS if name in self.fields]
        if any(self.has_error(name) for name in present):
            return cleaned  # the field's own error says what is wrong
        if present and all(cleaned.get(name) is None for name in present):
            raise ValidationError(
                "Set at least one of requests per minute, tokens per minute or concurrent "
                "requests: a rate limit with all three blank limits nothing.",
                code="no_limit",
            )
        return cleaned


class OncePerLevelForm(forms.ModelForm):
    """Refuses a second rule with the same ``unique_field`` at one level. ModelAccess has no
    unique constraint (a second row would only clutter the level's list); ModelAlias has
    one, but an inline hides the level field, so Django's own constraint check skips it and
    the save would end in an IntegrityError instead of a message."""

    unique_field = "model"

    def _level_ids(self, cleaned: dict[str, Any]) -> dict[str, int]:
        """The level this rule is attached to, whether the form shows the level fields (the
        standalone admin) or one is fixed by the parent (an inline)."""
        ids = {}
        for level in self._meta.model.levels:
            if level in self.fields:
                value = cleaned.get(level)
                level_id = value.pk if value is not None else None
            else:
                level_id = getattr(self.instance, f"{level}_id")
            if level_id is not None:
                ids[f"{level}_id"] = level_id
        return ids

    def duplicate_message(self, existing: ScopedRule, value: Any) -> str:
        raise NotImplementedError

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        value, levels = cleaned.get(self.unique_field), self._level_ids(cleaned)
        if value is None or len(levels) != 1:
            return cleaned  # the model's own "exactly one level" check reports this
        existing = (
            self._meta.model.objects.filter(**{self.unique_field: value}, **levels)
            .exclude(pk=self.instance.pk)
            .select_related(*self._meta.model.levels)
            .first()
        )
        if existing is not None:
            message = self.duplicate_message(existing, value)
            self.add_error(self.unique_field, ValidationError(message, code="duplicate"))
        return cleaned


class ModelAccessForm(OncePerLevelForm):
    class Meta:
        model = ModelAccess
        fields = (*USER_LEVELS, "model")

    def duplicate_message(self, existing: ScopedRule, value: Any) -> str:
        return f"{existing.level} already allows {value.name}; a model is listed once per level."


class ModelAliasForm(OncePerLevelForm):
    """The target must be a served model (the foreign key); an alias may not be a model's
    own name (``ModelAlias.clean``) and is listed once per level."""

    unique_field = "alias"

    class Meta:
        model = ModelAlias
        fields = (*LEVELS, "alias", "model")

    def duplicate_message(self, existing: ScopedRule, value: Any) -> str:
        return f"{existing.level} already maps {value}; an alias is listed once per level."


RULE_FORMS: dict[type[ScopedRule], type[forms.ModelForm]] = {
    Budget: BudgetForm,
    RateLimit: RateLimitForm,
    ModelAccess: ModelAccessForm,
    ModelAlias: ModelAliasForm,
}


# The field a level lists each value of once (checked across an inline's new rows).
ONCE_PER_LEVEL: dict[type[ScopedRule], str] = {ModelAccess: "model", ModelAlias: "alias"}

# --- Inlines on the level pages -------------------------------------------------------


class RuleInlineFormSet(BaseInlineFormSet):
    """Rules relate to their level with ``related_name="+"``, which leaves Django no prefix
    to derive; name the formset after the rule model so the POST keys stay readable."""

    def __init__(self, data: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(data, *args, **kwargs)
        total = self.add_prefix(TOTAL_FORM_COUNT)
        if self.is_bound and self.instance.pk is None and total not in self.data:
            # An add page posted without this inline's section (a script, an older form):
            # no rules to add, rather than a "management form missing" refusal. A change
            # page keeps Django's check (rows it lists must come back).
            data = self.data.copy()
            data[total] = "0"
            data[self.add_prefix(INITIAL_FORM_COUNT)] = "0"
            self.data = data

    @classmethod
    def get_default_prefix(cls) -> str:
        return cls.model._meta.model_name

    def clean(self) -> None:
        super().clean()
        field = ONCE_PER_LEVEL.get(self.model)
        if field is None:
            return
        # Each form checks the database; two new rows naming one value only meet here.
        seen: set[Any] = set()
        for form in self.forms:
            cleaned = getattr(form, "cleaned_data", None) or {}
            value = cleaned.get(field)
            if value is None or cleaned.get("DELETE"):
                continue
            if value in seen:
                raise ValidationError(f"{value} is listed twice; list each {field} once.")
            seen.add(value)


class RuleInline(ScopedInlineMixin, admin.TabularInline):
    formset = RuleInlineFormSet
    extra = 0
    autocomplete_fields = ("model",)

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        # A new level's page opens with one empty budget row, ready to fill (left empty,
        # it adds nothing).
        return 1 if obj is None and self.model is Budget else self.extra


def _has_model_field(rule_model: type[ScopedRule]) -> bool:
    return any(f.name == "model" for f in rule_model._meta.get_fields())


def rule_inlines_for(level: str) -> tuple[type[RuleInline], ...]:
    """Budget, RateLimit and ModelAccess inlines bound to one level (the other levels hidden).

    Level admins show them on change pages, and the budget and rate limit ones on add
    pages too (:class:`LevelRulesMixin` saves the new level first, in a savepoint).
    """
    return tuple(
        type(
            f"{model.__name__}{level.title()}Inline",
            (RuleInline,),
            {
                "model": model,
                "fk_name": level,
                "exclude": [name for name in model.levels if name != level],
                "form": RULE_FORMS.get(model, forms.ModelForm),
                "autocomplete_fields": ("model",) if _has_model_field(model) else (),
                "__module__": __name__,
            },
        )
        for model in RULE_MODELS
    )


# The rules a level's add page offers (a new team with its budget in one save); the
# others (routing, guardrails, capture) wait for its change page.
ADD_PAGE_RULES: tuple[type[ScopedRule], ...] = (Budget, RateLimit)
EARLY_SAVE = "_odock_early_save"


def early_saved(request: HttpRequest, obj: models.Model) -> bool:
    """Whether ``obj`` is the level an add page already saved for its inlines (see
    :class:`LevelRulesMixin`): the admin's own ``save_model`` must not save it twice."""
    early = getattr(request, EARLY_SAVE, None)
    return early is not None and early[1] is obj


class LevelRulesMixin:
    """For a level's ModelAdmin: appends its ``rule_inlines`` on change pages, and its
    budget and rate limit inlines on the add page too.

    A rule's checks (attached to exactly one level; never looser than a parent's) need the
    new level's row, which an add page does not have while it validates. So once the
    level's own form is valid, it is saved inside a savepoint before the inlines are
    validated; if any inline row is refused, the page rolls the savepoint back and shows
    the errors (nothing written), else the admin goes on and saves the rules.
    """

    rule_inlines: tuple[type[RuleInline], ...] = ()

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:
        inlines = list(super().get_inlines(request, obj))  # type: ignore[misc]
        if obj is None:
            return [*inlines, *(i for i in self.rule_inlines if i.model in ADD_PAGE_RULES)]
        return [*inlines, *self.rule_inlines]

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        obj = super().save_form(request, form, change)  # type: ignore[misc]
        if change or request.method != "POST":
            return obj
        savepoint = transaction.savepoint()
        self.save_model(request, obj, form, change)  # type: ignore[attr-defined]
        setattr(request, EARLY_SAVE, (savepoint, obj))
        return obj

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        early = getattr(request, EARLY_SAVE, None)
        if add and early is not None:
            # An inline was refused: undo the level's early save, show the page again.
            savepoint, saved = early
            transaction.savepoint_rollback(savepoint)
            delattr(request, EARLY_SAVE)
            saved.pk = None
            saved._state.adding = True
            if hasattr(request, "_odock_issued_key"):
                delattr(request, "_odock_issued_key")
        return super().render_change_form(  # type: ignore[misc]
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )


# --- Rule admins ----------------------------------------------------------------------


class LevelTypeFilter(admin.SimpleListFilter):
    title = "level"
    parameter_name = "level"
    field_prefix = ""  # "budget__" when the rows point at a rule

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        rule_model = Budget if self.field_prefix == "budget__" else model_admin.model
        return [(level, level.title()) for level in getattr(rule_model, "levels", LEVELS)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in USER_LEVELS:
            return queryset.filter(**{f"{self.field_prefix}{self.value()}__isnull": False})
        return queryset


class RuleAdmin(ScopedAdminMixin, ServiceSaveAdminMixin, admin.ModelAdmin):
    """Shared by the rule admins: a level column, level filter and search by name. A rule
    is inside the area of the level it is attached to (a team admin never sees or sets an
    organisation-level rule); the level choices are limited to the area."""

    scope_paths = RULE_PATHS

    list_select_related = ("organization", "team", "project", "key", "model")
    autocomplete_fields = ("organization", "team", "project", "key", "model")
    search_fields = (
        "organization__name",
        "team__name",
        "project__name",
        "key__name",
        "model__name",
    )
    search_help_text = "Organisation, team, project, key or model name."
    list_filter: tuple = (LevelTypeFilter, ("model", admin.RelatedOnlyFieldListFilter))

    @admin.display(description="level")
    def level(self, obj: ScopedRule) -> str:
        return obj.level


class PersonLevelRuleAdmin(RuleAdmin):
    """Budgets, rate limits and model access may also be attached to a person."""

    list_select_related = (*RuleAdmin.list_select_related, "user")
    autocomplete_fields = (*RuleAdmin.autocomplete_fields, "user")
    search_fields = (*RuleAdmin.search_fields, "user__username")
    search_help_text = "Organisation, team, project, key, model or user name."


@admin.register(Budget)
class BudgetAdmin(PersonLevelRuleAdmin):
    form = BudgetForm
    list_display = ("level", "model", "limit", "period", "hard", "spent", "used")
    list_filter = (*RuleAdmin.list_filter, "period", "hard")

    def _spent(self, obj: Budget) -> Decimal:
        # One aggregate over the request log per row. Acceptable here: budgets are few
        # (a handful per level), and a page shows at most list_per_page of them. Kept on
        # the row so the two columns share it.
        if not hasattr(obj, "_odock_spent_usd"):
            obj._odock_spent_usd = budget_spent_usd(obj)  # type: ignore[attr-defined]
        return obj._odock_spent_usd  # type: ignore[attr-defined]

    @admin.display(description="limit", ordering="limit_usd")
    def limit(self, obj: Budget) -> str:
        return usd_text(obj.limit_usd)

    @admin.display(description="spent (this period)")
    def spent(self, obj: Budget) -> str:
        return usd_text(self._spent(obj))

    @admin.display(description="% used")
    def used(self, obj: Budget) -> str:
        return percent_text(percent_used(self._spent(obj), obj.limit_usd))


@admin.register(RateLimit)
class RateLimitAdmin(PersonLevelRuleAdmin):
    form = RateLimitForm
    list_display = ("level", "model", "rpm", "tpm", "max_concurrency")


@admin.register(ModelAccess)
class ModelAccessAdmin(PersonLevelRuleAdmin):
    form = ModelAccessForm
    list_display = ("level", "model")


@admin.register(ModelAlias)
class ModelAliasAdmin(RuleAdmin):
    """Names clients send (e.g. Claude Code's defaults) mapped to a served model per level."""

    form = ModelAliasForm
    list_display = ("level", "alias", "model")
    search_fields = (*RuleAdmin.search_fields, "alias")
    search_help_text = "Organisation, team, project, key, alias or model name."


@admin.register(DeploymentTagRule)
class DeploymentTagRuleAdmin(RuleAdmin):
    """Data-residency routing rules: which deployments may serve a level's requests."""

    list_display = ("level", "tag", "allowed")
    list_select_related = ("organization", "team", "project", "key")
    autocomplete_fields = ("organization", "team", "project", "key")
    search_fields = ("organization__name", "team__name", "project__name", "key__name", "tag")
    search_help_text = "Organisation, team, project, key name or tag."
    list_filter = (LevelTypeFilter, "tag")

    @admin.display(description="allowed values")
    def allowed(self, obj: DeploymentTagRule) -> str:
        return ", ".join(obj.allowed_values or [])


@admin.register(ContentCapture)
class ContentCaptureAdmin(RuleAdmin):
    """How much prompt and response the audit record keeps, per level."""

    list_display = ("level", "mode", "max_bytes")
    list_select_related = ("organization", "team", "project", "key")
    autocomplete_fields = ("organization", "team", "project", "key")
    search_fields = ("organization__name", "team__name", "project__name", "key__name")
    search_help_text = "Organisation, team, project or key name."
    list_filter = (LevelTypeFilter, "mode")


@admin.register(GuardrailRule)
class GuardrailRuleAdmin(RuleAdmin):
    """What each level's guardrails do; a child may tighten its parent's rule, not loosen
    it (unless the parent allows), which the key's effective policy page shows."""

    list_display = ("level", "key_name", "action", "mode", "stage", "allow_loosen")
    list_select_related = ("organization", "team", "project", "key")
    autocomplete_fields = ("organization", "team", "project", "key")
    search_fields = ("organization__name", "team__name", "project__name", "key__name", "name")
    search_help_text = "Organisation, team, project, key or custom rule name."
    list_filter = (LevelTypeFilter, "detector", "action", "mode", "stage")


@admin.register(EndUserPolicy)
class EndUserPolicyAdmin(ScopedAdminMixin, ServiceSaveAdminMixin, admin.ModelAdmin):
    """Limits each end user of an organisation carries (an id, a prefix* or *); an
    organisation's admins manage its own, nobody else's."""

    scope_paths = ORGANIZATION_ID_PATHS
    container_paths = ORGANIZATION_ID_PATHS

    list_display = (
        "end_user",
        "organization",
        "limit",
        "period",
        "hard",
        "rpm",
        "tpm",
        "max_concurrency",
    )
    list_select_related = ("organization",)
    autocomplete_fields = ("organization",)
    search_fields = ("end_user", "organization__name")
    search_help_text = "End-user id or pattern, or organisation name."
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter), "period", "hard")
    formfield_overrides = {models.DecimalField: {"form_class": PlainDecimalField}}

    @admin.display(description="limit", ordering="limit_usd")
    def limit(self, obj: EndUserPolicy) -> str:
        return usd_text(obj.limit_usd)


# --- Budget alerts (written by apps.policies.alerts, never by hand) -------------------


class AlertLevelFilter(LevelTypeFilter):
    field_prefix = "budget__"


class DeliveredFilter(admin.SimpleListFilter):
    title = "delivered"
    parameter_name = "delivered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(delivered_at__isnull=self.value() == "no")
        return queryset


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """A record of what was sent: read-only, so it stays evidence of what people were told."""

    scope_paths = level_paths("budget__")
    read_only = True

    list_display = (
        "created_at",
        "budget_level",
        "period_key",
        "threshold_percent",
        "spent_usd",
        "limit_usd",
        "delivered",
        "webhook_status",
        "emailed",
        "error",
    )
    list_filter = (AlertLevelFilter, DeliveredFilter, "threshold", "emailed", "budget__period")
    list_select_related = (
        "budget__organization",
        "budget__team",
        "budget__project",
        "budget__key",
        "budget__user",
        "budget__model",
    )
    search_fields = (
        "budget__organization__name",
        "budget__team__name",
        "budget__project__name",
        "budget__key__name",
        "period_key",
    )
    search_help_text = "Organisation, team, project or key name, or a period (e.g. m202601)."
    date_hierarchy = "created_at"

    @admin.display(description="budget level", ordering="budget_id")
    def budget_level(self, obj: BudgetAlert) -> str:
        return obj.budget.level

    @admin.display(description="threshold", ordering="threshold")
    def threshold_percent(self, obj: BudgetAlert) -> str:
        return f"{obj.threshold}%"

    @admin.display(description="delivered", boolean=True, ordering="delivered_at")
    def delivered(self, obj: BudgetAlert) -> bool:
        return obj.delivered_at is not None

    def get_queryset(self, request: HttpRequest) -> QuerySet[BudgetAlert]:
        # str(alert) (change page title, history) names the budget's level and model.
        return super().get_queryset(request).select_related(*self.list_select_related)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BudgetAlert | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BudgetAlert | None = None) -> bool:
        return False
