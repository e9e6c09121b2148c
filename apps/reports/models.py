"""Usage roll-ups (hourly aggregates of the request log) and scheduled spend reports.

Reports and dashboards read ``UsageRollup`` only, never the raw request log: an hour of
traffic is one row per (organisation, team, project, key, model, provider, key owner, end
user) however many
requests it held. References to the hierarchy carry no database constraint, like the
audit log's, so roll-ups outlive the keys and teams they name.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import Value
from django.db.models.functions import Coalesce

from apps.core.validators import validate_upstream_url
from apps.reports.histogram import histogram_empty
from apps.tenancy.models import Organization

# The dimensions a roll-up row is keyed by, as column names (the request log's too), and
# the names reports and the API use for them.
GROUP_FIELDS: dict[str, str] = {
    "org": "organization_id",
    "team": "team_id",
    "project": "project_id",
    "key": "key_id",
    "model": "model_requested",
    "provider": "provider",
    "user": "user_id",  # the key's owner
    "end_user": "end_user",  # the application's end customer
}


def _ref(to: str) -> models.ForeignKey:
    return models.ForeignKey(
        to,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )


class UsageRollup(models.Model):
    """One UTC hour of requests of one key (and so team, project, org), model and provider.

    ``model_requested`` keeps the request log's name so the policies app's budget filters
    apply to roll-ups unchanged. Latency: the sum (for means) and a fixed log-scale
    histogram (``apps.reports.histogram``) for percentiles."""

    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    organization = _ref("tenancy.Organization")
    team = _ref("tenancy.Team")
    project = _ref("tenancy.Project")
    key = _ref("keys.VirtualKey")
    model_requested = models.CharField("model", max_length=200, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    user = _ref(settings.AUTH_USER_MODEL)
    end_user = models.CharField("end user", max_length=128, blank=True, default="")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="Answered 5xx.")
    refusals = models.PositiveBigIntegerField(default=0, help_text="Answered 4xx.")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=28, decimal_places=12, default=0)
    latency_ms_sum = models.FloatField(default=0)
    latency_histogram = models.JSONField(default=histogram_empty)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-hour"]
        verbose_name = "usage roll-up"
        indexes = [
            models.Index(fields=["hour"]),
            models.Index(fields=["organization", "hour"]),
        ]
        constraints = [
            # One row per hour and dimensions. NULL ids (a refused request with no key)
            # are folded to 0 so two NULLs collide too, on every database.
            models.UniqueConstraint(
                "hour",
                Coalesce("organization", Value(0)),
                Coalesce("team", Value(0)),
                Coalesce("project", Value(0)),
                Coalesce("key", Value(0)),
                "model_requested",
                "provider",
                Coalesce("user", Value(0)),
                "end_user",
                name="usage_rollup_one_row_per_hour_and_dims_v2",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.model_requested or '-'} x{self.requests}"


class SpendReport(UsageRollup):
    """The spend report download in the admin: its page reads roll-ups, hence a proxy."""

    class Meta:
        proxy = True
        verbose_name = "spend report"
        verbose_name_plural = "spend reports"


class RollupState(models.Model):
    """Where the incremental roll-up stands in the request log (one row per roll-up).

    ``watermark`` is the highest request-log id rolled. Ids are handed out when a row is
    inserted, not when its transaction commits, so a row below the watermark can still
    appear (a writer batch that committed late). The next runs therefore rescan from
    ``settled``: the highest id seen at least ``SETTLE`` ago, below which every
    transaction has long committed."""

    name = models.CharField(max_length=32, unique=True)
    watermark = models.BigIntegerField(default=0)
    settled = models.BigIntegerField(default=0)
    candidate = models.BigIntegerField(default=0)
    candidate_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_hours = models.PositiveIntegerField(default=0, help_text="Hours recomputed last run.")

    def __str__(self) -> str:
        return f"{self.name} at id {self.watermark}"


class Granularity(models.TextChoices):
    DAY = "day", "Per day"
    MONTH = "month", "Per month"


class ScheduleFormat(models.TextChoices):
    CSV = "csv", "CSV"
    XLSX = "xlsx", "Excel (XLSX)"


def validate_group_by(value: str) -> None:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUP_FIELDS]
    if unknown:
        raise ValidationError(
            f"Unknown grouping {', '.join(unknown)}; use any of {', '.join(GROUP_FIELDS)}."
        )


def validate_emails(value: str) -> None:
    for address in (a.strip() for a in value.split(",")):
        if address:
            validate_email(address)


class ReportSchedule(models.Model):
    """Sends an organisation's spend report for the previous month on the 1st, by email
    (an attachment) and/or a webhook POST signed like budget alerts (with the
    organisation's webhook secret)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="report_schedules"
    )
    emails = models.CharField(
        max_length=1000,
        blank=True,
        validators=[validate_emails],
        help_text="Comma-separated addresses; the report is attached.",
    )
    webhook_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_upstream_url],
        help_text="The report is POSTed here as JSON, signed with the organisation's "
        "webhook secret (X-Odock-Signature).",
    )
    group_by = models.CharField(
        max_length=100,
        blank=True,
        default="team,model",
        validators=[validate_group_by],
        help_text="Comma-separated: org, team, project, key, model, provider.",
    )
    granularity = models.CharField(
        max_length=8, choices=Granularity.choices, default=Granularity.DAY
    )
    format = models.CharField(max_length=8, choices=ScheduleFormat.choices, default="xlsx")
    is_active = models.BooleanField(default=True)
    last_sent_period = models.CharField(
        max_length=7, blank=True, editable=False, help_text="The last month delivered (YYYY-MM)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__name", "pk"]
        verbose_name = "monthly report schedule"

    def __str__(self) -> str:
        return f"{self.organization.name}: monthly {self.format} by {self.group_by or 'total'}"

    def clean(self) -> None:
        if not self.emails.strip() and not self.webhook_url.strip():
            raise ValidationError("Give email addresses, a webhook URL, or both.")

    @property
    def group_by_list(self) -> list[str]:
        return [n.strip() for n in self.group_by.split(",") if n.strip()]

    @property
    def recipients(self) -> list[str]:
        return [a.strip() for a in self.emails.split(",") if a.strip()]


class ReportDelivery(models.Model):
    """One schedule's report for one month: the unique constraint makes delivery
    idempotent, ``claimed_at`` keeps two workers from sending it at once, and the
    per-channel fields let a retry redo only what failed."""

    schedule = models.ForeignKey(
        ReportSchedule, on_delete=models.CASCADE, related_name="deliveries"
    )
    period = models.CharField(max_length=7, help_text="YYYY-MM")
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    emailed = models.BooleanField(default=False)
    webhook_status = models.PositiveSmallIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-period"]
        verbose_name_plural = "report deliveries"
        constraints = [
            models.UniqueConstraint(fields=["schedule", "period"], name="report_delivery_once")
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} {self.period}"
