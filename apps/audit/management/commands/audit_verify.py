"""``manage.py audit_verify [--org ID]``: check every audit chain; exit 1 naming the first
broken record."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.audit.chain import chain_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chains and signed checkpoints."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", type=int, default=None, help="one organisation's chains")

    def handle(self, *args, org: int | None = None, **options) -> None:
        report = chain_verify(organization_id=org)
        if not report.ok:
            raise CommandError(report.summary())
        self.stdout.write(report.summary())
