"""The rules of the management API that an OpenAPI schema cannot state, for schemathesis.

Each one is written in its operation's description, and the API refuses a request that
breaks it with a 422 (tests in test_management_api.py / test_audit_api.py). Schemathesis
checks that every request the schema allows is accepted, so it is told not to generate
these: the filters below say, for each operation, what the description says. Loaded with
``SCHEMATHESIS_HOOKS=tests.api.schemathesis_hooks``.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from typing import Any

import django
import schemathesis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")
django.setup()  # the rules are checked with the API's own parsers

from django.utils import timezone  # noqa: E402


def _operation(ctx: Any) -> tuple[str, str]:
    operation = ctx.operation
    return (operation.method.upper(), operation.path) if operation is not None else ("", "")


def _instant(text: Any, *, end: bool) -> datetime | None:
    from apps.audit.selectors import parse_instant

    try:
        return parse_instant(str(text), now=timezone.now(), end_of_day=end)
    except ValueError:
        return None  # not a valid value at all: a negative case, refused anyway


def _decimal(text: Any) -> Any:
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


def _date(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        return None


@schemathesis.hook
def filter_query(ctx: Any, query: Any) -> bool:
    if not isinstance(query, dict):
        return True
    method, path = _operation(ctx)
    if path.endswith(("/audit/records", "/audit/export")):
        start, end = _instant(query.get("from"), end=False), _instant(query.get("to"), end=True)
        if start is not None and end is not None and start >= end:
            return False  # "to must be later than from"
        low, high = _decimal(query.get("cost_min")), _decimal(query.get("cost_max"))
        return low is None or high is None or low <= high
    return True


@schemathesis.hook
def map_query(ctx: Any, query: Any) -> Any:
    """A spend report's range: ``end`` after ``start``, by at most three years. Random
    dates rarely are, so the range is moved rather than the case dropped."""
    _, path = _operation(ctx)
    if not (isinstance(query, dict) and path.endswith("/reports/spend")):
        return query
    from apps.reports.selectors import MAX_RANGE_DAYS

    start, end = _date(query.get("start")), _date(query.get("end"))
    if start is None or end is None or start < end <= start + timedelta(days=MAX_RANGE_DAYS):
        return query
    if start < date.max - timedelta(days=31):
        end = start + timedelta(days=31)
    else:
        start = end - timedelta(days=31)
    return {**query, "start": start.isoformat(), "end": end.isoformat()}


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    method, path = _operation(ctx)
    if not (method == "POST" and path.endswith("/v1/keys") and isinstance(body, dict)):
        return True
    expires_at = body.get("expires_at")
    if isinstance(expires_at, str):
        try:
            moment = datetime.fromisoformat(expires_at.upper())
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None and moment <= timezone.now():
            return False  # "expires_at must be in the future"
    return True
