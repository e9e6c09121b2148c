"""``manage.py odock_admin_token NAME [--org ORG [--role ROLE] [--team TEAM]]
[--expires-in-days N]``: issue a management-API token and print its secret, once (only
its digest is stored)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.api.models import TOKEN_ROLES
from apps.api.services import admin_token_issue
from apps.identity.models import Role
from apps.tenancy.models import Organization, Team

ROLE_NAMES = [r.value for r in TOKEN_ROLES if r != Role.PLATFORM_ADMIN]


class Command(BaseCommand):
    help = (
        "Issue an admin token for the management API (/api/v1/) and print it once. "
        "Without --org the token is platform-wide."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="who or what will use the token")
        parser.add_argument("--org", help="limit the token to this organisation (its name)")
        parser.add_argument(
            "--role",
            choices=ROLE_NAMES,
            help="what the token may do (default org_admin; needs --org)",
        )
        parser.add_argument(
            "--team",
            help="limit a team_admin, finance or auditor token to this team of --org (its name)",
        )
        parser.add_argument(
            "--expires-in-days", type=int, help="the token stops working after this many days"
        )

    def handle(
        self,
        *args: Any,
        name: str,
        org: str | None,
        expires_in_days: int | None,
        role: str | None = None,
        team: str | None = None,
        **options: Any,
    ) -> None:
        organization = None
        if org is not None:
            organization = Organization.objects.filter(name=org).first()
            if organization is None:
                raise CommandError(f"no organisation named {org!r}")
        elif role is not None or team is not None:
            raise CommandError(
                "--role and --team need --org (a platform token is a platform admin)"
            )
        team_obj = None
        if team is not None:
            team_obj = Team.objects.filter(organization=organization, name=team).first()
            if team_obj is None:
                raise CommandError(f"no team named {team!r} in organisation {org!r}")
        expires_at = None
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise CommandError("--expires-in-days must be positive")
            expires_at = timezone.now() + timedelta(days=expires_in_days)
        try:
            issued = admin_token_issue(
                name=name,
                organization=organization,
                role=role,
                team=team_obj,
                expires_at=expires_at,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        scope = f"{issued.token.role} of {issued.token.level}"
        # The secret alone on stdout, so scripts can capture it; the notes go to stderr.
        self.stderr.write(f"Admin token {name!r} ({scope}); it will not be shown again:")
        self.stdout.write(issued.secret)
