"""``python manage.py fake_provider``: run the fake OpenAI upstream in the foreground.

A convenience for local demos (point a provider's ``api_base`` at it). It is the same server
as ``python -m apps.fakes.openai_server`` and needs no database.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from apps.fakes.openai_server import add_cli_arguments, behavior_from_options, run


class Command(BaseCommand):
    help = "Run a fake OpenAI-compatible upstream (for demos, tests and benchmarks)."
    # The fake touches neither the database nor any Django model: skip checks entirely.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_cli_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run(
            host=options["host"],
            port=options["port"],
            behavior=behavior_from_options(options),
            api_key=options["api_key"],
        )
