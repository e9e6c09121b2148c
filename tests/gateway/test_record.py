"""The record stage's typed record turns into exactly the row the audit writer stores."""

from __future__ import annotations

import orjson

from apps.audit.chain import HASHED_FIELDS
from apps.gateway.context import (
    McpAttempt,
    Outcome,
    RequestContext,
    StageName,
    attempt,
)
from apps.gateway.stages.record import record_of
from tests.gateway.contexts import bare_context

WRITER_FIELDS = ("chain", "seq", "prev_hash")  # added by the writer, not the gateway


def _context() -> RequestContext:
    ctx = bare_context(started_wall=1_700_000_000.0)
    ctx.decide(StageName.AUTHENTICATE, Outcome.DENY, "missing key")
    ctx.attempts.append(attempt("openai:gpt", 502, "upstream_error", 12.34567))
    ctx.attempts.append(McpAttempt("tickets", 3.5))
    ctx.status = 401
    return ctx


def test_the_row_has_the_audit_writers_fields_in_order():
    row = record_of(_context()).as_dict()
    assert tuple(row) == tuple(f for f in HASHED_FIELDS if f not in WRITER_FIELDS)


def test_decisions_and_attempts_are_stored_as_plain_positional_rows():
    row = record_of(_context()).as_dict()
    assert row["decisions"] == [["authenticate", "deny", "missing key"]]
    assert all(type(part) is str for part in row["decisions"][0])  # not enum members
    assert row["attempts"] == [
        ("openai:gpt", 502, "upstream_error", 12.346),
        ("mcp", "tickets", 3.5, 3.5),
    ]
    stored = orjson.loads(orjson.dumps(row["decisions"] + row["attempts"]))
    assert stored[0] == ["authenticate", "deny", "missing key"]
    assert stored[1] == ["openai:gpt", 502, "upstream_error", 12.346]
