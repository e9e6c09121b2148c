"""The three rules of the management API that its OpenAPI schema cannot state, for
schemathesis (``SCHEMATHESIS_HOOKS=tests.api.schemathesis_hooks``).

Each is written in its operation's description, and the API refuses a request breaking it
with a 422 (tests in test_management_api.py, test_roles.py and tests/reports): a new key's
``expires_at`` must be in the future, a spend report's ``end`` must follow its ``start``
by at most three years, and an evidence pack's period must not end before it starts.
Schemathesis checks that every request the schema allows is accepted, so its
generated requests are made to keep these rules; everything else it may generate.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import schemathesis

REPORT_RANGE = timedelta(days=31)  # well inside the three years allowed


def _operation(ctx: Any) -> tuple[str, str]:
    operation = ctx.operation
    return (operation.method.upper(), operation.path) if operation is not None else ("", "")


def _date(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        return None  # not a date at all: a negative case, refused anyway


@schemathesis.hook
def map_query(ctx: Any, query: Any) -> Any:
    """A spend report's range: random dates rarely are one, so it is moved into shape."""
    _, path = _operation(ctx)
    if not (isinstance(query, dict) and path.endswith("/reports/spend")):
        return query
    start, end = _date(query.get("start")), _date(query.get("end"))
    if start is None or end is None or start < end <= start + REPORT_RANGE:
        return query
    if start < date.max - REPORT_RANGE:
        end = start + REPORT_RANGE
    else:
        start = end - REPORT_RANGE
    return {**query, "start": start.isoformat(), "end": end.isoformat()}


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    """A new key's ``expires_at`` in the past, and an evidence pack's period that ends
    before it starts, are refused by design: not generated."""
    method, path = _operation(ctx)
    if method == "POST" and path.endswith("/evidence/packs") and isinstance(body, dict):
        start, end = _date(body.get("period_start")), _date(body.get("period_end"))
        return start is None or end is None or start <= end
    if not (method == "POST" and path.endswith("/v1/keys") and isinstance(body, dict)):
        return True
    expires_at = body.get("expires_at")
    if not isinstance(expires_at, str):
        return True
    try:
        moment = datetime.fromisoformat(expires_at.upper())
    except ValueError:
        return True  # not a time: a negative case, refused anyway
    return moment.tzinfo is None or moment > datetime.now(UTC)
