"""The flows' forms: input checks only (types, bounds, slugs); every rule about the
hierarchy is the services' (``apps.onboarding.services``). Each form's fields are named
after its service's keyword arguments: the view passes the cleaned data as they are."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.db.models import QuerySet

from apps.core.forms import WriteOnlySecretWidget
from apps.gateway.providers.registry import choices as provider_kind_choices

MONEY = {"max_digits": 14, "decimal_places": 6}


class NewTeamForm(forms.Form):
    organization = forms.ModelChoiceField(
        queryset=None,
        empty_label=None,
        error_messages={
            "invalid_choice": "You may not create teams in that organisation: "
            "it is not one you administer."
        },
    )
    team_name = forms.SlugField(max_length=100, help_text="Letters, digits, - and _.")
    monthly_budget_usd = forms.DecimalField(
        label="Monthly budget (USD)",
        min_value=Decimal("0.01"),
        help_text="Hard: the team's requests are refused past it.",
        **MONEY,
    )
    rpm = forms.IntegerField(
        label="Requests per minute",
        required=False,
        min_value=1,
        max_value=10_000_000,
        help_text="Optional: blank for no team-wide rate limit.",
    )
    project_name = forms.SlugField(max_length=100, initial="default")
    key_name = forms.SlugField(max_length=100, initial="default-key")

    def __init__(self, *args: Any, organizations: QuerySet, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["organization"]
        field.queryset = organizations  # type: ignore[attr-defined]
        if len(organizations) == 1:
            self.initial.setdefault("organization", organizations[0].pk)
        else:  # several: make the person choose rather than default to the first
            field.empty_label = "Choose an organisation"  # type: ignore[attr-defined]


def options_parse_lines(text: str) -> dict[str, str]:
    """``name=value`` lines → a dict (blank lines ignored); raises ValidationError."""
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise forms.ValidationError(f"Line {number}: write name=value (e.g. region=eu-west-1).")
        if name.strip() in options:
            raise forms.ValidationError(f"Line {number}: {name.strip()} is given twice.")
        options[name.strip()] = value.strip()
    return options


class NewProviderForm(forms.Form):
    provider_name = forms.SlugField(max_length=100, label="Provider name")
    kind = forms.ChoiceField(choices=provider_kind_choices)
    api_base = forms.CharField(
        max_length=500, label="Base URL", help_text="e.g. https://api.openai.com/v1"
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=WriteOnlySecretWidget(),
        help_text="Stored encrypted; never shown back, on any page.",
    )
    options = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="Optional, one name=value per line (e.g. api_version=2024-10-21, "
        "region=eu-west-1).",
    )
    model_name = forms.CharField(
        max_length=200, label="Public model name", help_text="What apps ask for."
    )
    upstream_model = forms.CharField(
        max_length=200, label="Deployment: the model's name at the provider"
    )
    input_per_mtok = forms.DecimalField(
        label="Input price (USD per 1M tokens)", min_value=0, initial=Decimal("0"), **MONEY
    )
    output_per_mtok = forms.DecimalField(
        label="Output price (USD per 1M tokens)", min_value=0, initial=Decimal("0"), **MONEY
    )

    def clean_options(self) -> dict[str, str]:
        return options_parse_lines(self.cleaned_data.get("options") or "")
