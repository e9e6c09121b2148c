"""How long a key minted in the portal may live, per organisation and per team.

Kept here rather than on ``Organization``/``Team`` so the portal's policy is one small
table its own app owns. The effective maximum for a project is the smallest of its
organisation's and its team's rules, and ``DEFAULT_MAX_KEY_LIFETIME_DAYS`` when neither
has one (``ODOCK_PORTAL_MAX_KEY_LIFETIME_DAYS`` overrides it): a self-service key always
expires. A team's rule may not be longer than its organisation's.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from apps.tenancy.models import Organization, Team

DEFAULT_MAX_KEY_LIFETIME_DAYS = 90


class KeyLifetimeRule(models.Model):
    organization = models.OneToOneField(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    team = models.OneToOneField(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    max_key_lifetime_days = models.PositiveIntegerField(validators=[MinValueValidator(1)])

    class Meta:
        verbose_name = "portal key lifetime rule"
        constraints = [
            models.CheckConstraint(
                condition=Q(organization__isnull=False, team__isnull=True)
                | Q(organization__isnull=True, team__isnull=False),
                name="keylifetimerule_one_level",
            )
        ]

    def __str__(self) -> str:
        where = f"org:{self.organization}" if self.organization_id else f"team:{self.team}"
        return f"{where}: portal keys live at most {self.max_key_lifetime_days} days"

    def clean(self) -> None:
        if (self.organization_id is None) == (self.team_id is None):
            raise ValidationError("Attach the rule to an organisation or a team.")
        if self.team_id is not None and self.max_key_lifetime_days:
            parent = KeyLifetimeRule.objects.filter(
                organization_id=self.team.organization_id
            ).first()
            if parent is not None and self.max_key_lifetime_days > parent.max_key_lifetime_days:
                raise ValidationError(
                    {
                        "max_key_lifetime_days": (
                            f"{self.max_key_lifetime_days} days is looser than "
                            f"org:{parent.organization}'s {parent.max_key_lifetime_days} days "
                            "(a child's limit can only be tighter)"
                        )
                    }
                )
