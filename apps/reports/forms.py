"""Admin forms of the reports app: the spend report download and a schedule's grouping.

Both take the person's spend area (``area=scope_for(user).area(Capability.SPEND)``): the
organisation choices are then the organisations wholly inside it (the reports are
organisation-wide), and a person who is not a platform admin must pick one."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from apps.identity.scope import Area
from apps.reports.models import GROUP_FIELDS, Granularity, ReportSchedule
from apps.reports.selectors import SpendReportSpec, day_range_default, spend_report_spec
from apps.tenancy.models import Organization

GROUP_LABELS = {
    "org": "Organisation",
    "team": "Team",
    "project": "Project",
    "key": "Key",
    "model": "Model",
    "provider": "Provider",
    "user": "User (key owner)",
    "end_user": "End user",
}
GROUP_CHOICES = [(name, GROUP_LABELS[name]) for name in GROUP_FIELDS]
FORMAT_CHOICES = [("html", "Show here"), ("csv", "CSV download"), ("xlsx", "Excel (XLSX) download")]


def organizations_for_reports(area: Area) -> Any:
    """Organisations a spend report or schedule may be about, for this spend area."""
    qs = Organization.objects.order_by("name")
    return qs if area.everything else qs.filter(pk__in=area.org_ids)


def scope_organization_field(field: forms.Field | None, area: Area | None) -> None:
    """Limit an organisation choice to the area (None: unscoped, the platform's). A
    choice outside it is refused by the field itself ("not one of the available
    choices"), so a crafted POST changes nothing. No field (read-only in the admin): no
    choice to limit."""
    if field is None or area is None or area.everything:
        return
    assert isinstance(field, forms.ModelChoiceField)
    field.queryset = organizations_for_reports(area)
    field.required = True
    field.empty_label = None


class DateInput(forms.DateInput):
    input_type = "date"


class SpendReportForm(forms.Form):
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.order_by("name"),
        required=False,
        empty_label="All organisations",
    )
    start = forms.DateField(widget=DateInput, help_text="First UTC day included.")
    end = forms.DateField(widget=DateInput, help_text="First UTC day excluded.")
    group_by = forms.MultipleChoiceField(
        choices=GROUP_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )
    granularity = forms.ChoiceField(choices=Granularity.choices, initial=Granularity.DAY)
    format = forms.ChoiceField(choices=FORMAT_CHOICES, initial="html")

    def __init__(self, *args: Any, area: Area | None = None, **kwargs: Any) -> None:
        start, end = day_range_default()
        kwargs.setdefault("initial", {"start": start, "end": end, "group_by": ["team", "model"]})
        super().__init__(*args, **kwargs)
        self.spec: SpendReportSpec | None = None
        scope_organization_field(self.fields.get("organization"), area)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        org = data.get("organization")
        try:
            self.spec = spend_report_spec(
                start=data["start"],
                end=data["end"],
                group_by=data.get("group_by") or (),
                granularity=data["granularity"],
                organization_ids=None if org is None else [org.pk],
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
        return data


class ReportScheduleForm(forms.ModelForm):
    """Grouping as checkboxes; stored as the comma-separated names the API takes too."""

    group_by = forms.MultipleChoiceField(
        choices=GROUP_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = ReportSchedule
        fields = (
            "organization",
            "emails",
            "webhook_url",
            "group_by",
            "granularity",
            "format",
            "is_active",
        )

    def __init__(self, *args: Any, area: Area | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        scope_organization_field(self.fields.get("organization"), area)
        if not self.is_bound:
            self.initial["group_by"] = self.instance.group_by_list

    def clean_group_by(self) -> str:
        chosen = set(self.cleaned_data.get("group_by") or ())
        return ",".join(name for name in GROUP_FIELDS if name in chosen)
