"""The portal's forms: parsing and choices only; the rules are in ``services``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import validate_slug

from apps.policies.models import BudgetPeriod
from apps.portal.selectors import max_key_lifetime_days, member_projects, models_for_project
from apps.portal.services import KeyRequest


class SsoForm(forms.Form):
    organization = forms.SlugField(max_length=100, label="Organisation")


class KeyCreateForm(forms.Form):
    project = forms.ChoiceField(help_text="A project you are a member of.")
    name = forms.CharField(max_length=100, validators=[validate_slug])
    lifetime_days = forms.IntegerField(
        min_value=1, initial=30, label="Expires in (days)", help_text="Your team sets the most."
    )
    models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: whatever your project allows.",
    )
    budget_usd = forms.DecimalField(
        required=False,
        min_value=Decimal("0"),
        max_digits=14,
        decimal_places=6,
        label="Key budget (USD)",
        help_text="Optional; no looser than any budget above the key.",
    )
    budget_period = forms.ChoiceField(choices=BudgetPeriod.choices, initial="monthly")
    rpm = forms.IntegerField(required=False, min_value=1, label="Requests per minute")
    tpm = forms.IntegerField(required=False, min_value=1, label="Tokens per minute")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bounded: a person is a member of a handful of projects, at most a hundred shown.
        self.projects = {str(p.pk): p for p in member_projects(user)[:100]}
        self.fields["project"].choices = [
            (pk, f"{p} (keys live at most {max_key_lifetime_days(p)} days)")
            for pk, p in self.projects.items()
        ]
        names: set[str] = set()
        for project in self.projects.values():
            names.update(models_for_project(project))
        self.fields["models"].choices = [(n, n) for n in sorted(names)]

    def key_request(self) -> KeyRequest:
        data = self.cleaned_data
        return KeyRequest(
            project=self.projects[data["project"]],
            name=data["name"],
            lifetime_days=data["lifetime_days"],
            models=list(data.get("models") or []),
            budget_usd=data.get("budget_usd"),
            budget_period=data.get("budget_period") or "monthly",
            rpm=data.get("rpm"),
            tpm=data.get("tpm"),
        )
