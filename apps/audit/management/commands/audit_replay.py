"""``manage.py audit_replay [--spool-dir DIR]``: write what dead gateway processes left in
the audit spool directory (segment logs, spools of the earlier format) to the database and
seal their chains — what a gateway started on the same directory does by itself; for a
host where none will run again, or to empty the directory before moving it."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.audit.writer import orphans_adopt


class Command(BaseCommand):
    help = (
        "Replay the audit records dead gateway processes left on local disk into the "
        "database (idempotent: a record already there is not written twice)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--spool-dir",
            type=Path,
            default=None,
            help="the directory (default: ODOCK_AUDIT_SPOOL_DIR)",
        )

    def handle(self, *args, **options) -> None:
        directory = Path(options["spool_dir"] or settings.ODOCK_AUDIT_SPOOL_DIR)
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        replayed, complete = orphans_adopt(directory)
        if not complete:
            raise CommandError(
                f"the database went away after {replayed} records; run the command again "
                "(records already written are not written twice)"
            )
        self.stdout.write(f"{replayed} audit records replayed from {directory}")
