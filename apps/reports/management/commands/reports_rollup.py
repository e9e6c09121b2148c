"""``manage.py reports_rollup [--since WHEN --until WHEN]``: bring the usage roll-ups up to
date, or recompute a period from the raw request log (idempotent: hours are replaced,
never added to). ``WHEN`` is an ISO date or datetime, UTC unless it says otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.reports.rollup import usage_rollup_period, usage_rollup_run


def parse_when(value: str) -> datetime:
    """``2026-01-01`` or ``2026-01-01T10:00[+00:00]``; naive means UTC."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not an ISO date or datetime: {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Roll the request log up into hourly usage roll-ups. Without options: the "
        "incremental run the beat schedule makes. With --since and --until: recompute every "
        "hour of [since, until) from the raw records."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="start, inclusive (ISO date or datetime, UTC)")
        parser.add_argument("--until", help="end, exclusive (ISO date or datetime, UTC)")

    def handle(self, *args: Any, since: str | None, until: str | None, **options: Any) -> None:
        if (since is None) != (until is None):
            raise CommandError("give both --since and --until, or neither")
        if since is None or until is None:
            result = usage_rollup_run()
            self.stdout.write(
                f"rolled up {result.hours} hour(s), {result.rows} row(s); "
                f"request log rolled up to id {result.watermark}"
            )
            return
        since_at, until_at = parse_when(since), parse_when(until)
        if until_at <= since_at:
            raise CommandError("--until must be after --since")
        result = usage_rollup_period(since=since_at, until=until_at)
        self.stdout.write(
            f"recomputed {result.hours} hour(s) with records, {result.rows} row(s), "
            f"in [{since_at.isoformat()}, {until_at.isoformat()})"
        )
