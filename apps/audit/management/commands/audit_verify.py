"""``manage.py audit_verify [--org ID] [--max-unsealed-age SECONDS]``: check every audit
chain; exit 1 naming the first broken record, or (with ``--max-unsealed-age``) an
unsealed tail older than that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from apps.audit.chain import chain_verify


class Command(BaseCommand):
    help = (
        "Verify the audit log's hash chains and signed checkpoints, and list the records "
        "no checkpoint covers yet (unsealed tails)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", type=int, default=None, help="one organisation's chains")
        parser.add_argument(
            "--max-unsealed-age",
            type=float,
            default=None,
            metavar="SECONDS",
            help="fail if a chain has records not sealed whose newest is older than this "
            "(a writer that died and was not adopted: deleting those records goes unnoticed)",
        )

    def handle(self, *args, org: int | None = None, max_unsealed_age=None, **options) -> None:
        report = chain_verify(organization_id=org)
        if not report.ok:
            raise CommandError(report.summary())
        if max_unsealed_age is not None:
            cutoff = datetime.now(UTC) - timedelta(seconds=max_unsealed_age)
            stale = [t for t in report.unsealed_tails if t.newest_at <= cutoff]
            if stale:
                lines = "\n  ".join(t.describe() for t in stale)
                raise CommandError(
                    f"{len(stale)} chains have records not sealed for more than "
                    f"{max_unsealed_age:g} s:\n  {lines}"
                )
        self.stdout.write(report.summary())
