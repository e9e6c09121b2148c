"""``manage.py odock_apply FILE.yaml``: declarative, idempotent set-up from a YAML file.

The semantics live in ``apps.policies.config``; this command only reads the file and
reports.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.compliance.context import changes_by
from apps.policies.config import ConfigError, config_apply, config_load


class Command(BaseCommand):
    help = (
        "Create or update providers, models, deployments, organisations, teams, projects, "
        "keys, budgets, rate limits and model access from a YAML file. Idempotent; all or "
        "nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the YAML file, or - to read standard input")

    def handle(self, *args: Any, file: str, **options: Any) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            with changes_by("odock_apply"):  # the change trail names the file, not "system"
                config_apply(config_load(text), stdout=self.stdout)
        except ConfigError as exc:
            lines = "\n".join(f"  {line}" for line in exc.errors)
            raise CommandError(
                f"{file}: invalid configuration, nothing changed:\n{lines}"
            ) from None
