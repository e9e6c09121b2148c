"""Admin for budgets, rate limits and model access, standalone and as inlines on each level."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from apps.policies.models import LEVELS, Budget, ModelAccess, RateLimit, ScopedRule

RULE_MODELS: tuple[type[ScopedRule], ...] = (Budget, RateLimit, ModelAccess)


class RuleInlineFormSet(BaseInlineFormSet):
    """Rules relate to their level with ``related_name="+"``, which leaves Django no prefix
    to derive; name the formset after the rule model so the POST keys stay readable."""

    @classmethod
    def get_default_prefix(cls) -> str:
        return cls.model._meta.model_name


class RuleInline(admin.TabularInline):
    formset = RuleInlineFormSet
    extra = 0
    autocomplete_fields = ("model",)


def rule_inlines_for(level: str) -> tuple[type[RuleInline], ...]:
    """Budget, RateLimit and ModelAccess inlines bound to one level (the other levels hidden).

    Level admins show them on change pages only: on an add page the parent has no pk yet,
    so the rules' "exactly one level" check could not pass.
    """
    others = [name for name in LEVELS if name != level]
    return tuple(
        type(
            f"{model.__name__}{level.title()}Inline",
            (RuleInline,),
            {"model": model, "fk_name": level, "exclude": others, "__module__": __name__},
        )
        for model in RULE_MODELS
    )


class LevelRulesMixin:
    """For a level's ModelAdmin: appends its ``rule_inlines`` on change pages."""

    rule_inlines: tuple[type[RuleInline], ...] = ()

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:
        inlines = list(super().get_inlines(request, obj))  # type: ignore[misc]
        return inlines if obj is None else [*inlines, *self.rule_inlines]


class LevelTypeFilter(admin.SimpleListFilter):
    title = "level"
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(level, level.title()) for level in LEVELS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in LEVELS:
            return queryset.filter(**{f"{self.value()}__isnull": False})
        return queryset


class RuleAdmin(admin.ModelAdmin):
    """Shared by the three rule admins: a level column, level filter and search by name."""

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


@admin.register(Budget)
class BudgetAdmin(RuleAdmin):
    list_display = ("level", "model", "limit_usd", "period", "hard")
    list_filter = (*RuleAdmin.list_filter, "period", "hard")


@admin.register(RateLimit)
class RateLimitAdmin(RuleAdmin):
    list_display = ("level", "model", "rpm", "tpm", "max_concurrency")


@admin.register(ModelAccess)
class ModelAccessAdmin(RuleAdmin):
    list_display = ("level", "model")
