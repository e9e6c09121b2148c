"""Export a filtered set of audit records as JSONL or CSV, streamed.

Every column of the record, in model order. JSONL keeps JSON fields as JSON and ``null``
as null; CSV writes JSON fields as JSON text, null as an empty cell and booleans as
``true`` / ``false``. In both, ``cost_usd`` is the Decimal as a string (a float would lose
digits) and times are ISO 8601 in UTC.

Rows are read in keyset chunks (``apps.audit.selectors.request_log_chunks``) and written as
they come, so an export of millions of rows runs in constant memory. Under ASGI the chunks
are pulled through ``sync_to_async`` one at a time: handed a plain iterator, Django's ASGI
handler would first read the whole export into a list.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.audit.selectors import request_log_chunks

COLUMNS: tuple[str, ...] = tuple(f.attname for f in RequestLog._meta.concrete_fields)
JSON_COLUMNS = frozenset(
    f.attname for f in RequestLog._meta.concrete_fields if isinstance(f, models.JSONField)
)
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}
CHUNK_ROWS = 1000
# A spreadsheet runs a cell starting with one of these as a formula; user agents and
# error codes come from outside, so CSV cells get a leading apostrophe (OWASP's advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def record_values(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ``COLUMNS`` as JSON-ready values: Decimal and datetime as strings, JSON
    fields as the objects they hold."""
    out: dict[str, Any] = {}
    for name, value in zip(COLUMNS, row, strict=True):
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = value
    return out


def _csv_cell(name: str, value: Any) -> Any:
    if name in JSON_COLUMNS:
        return orjson.dumps(value).decode()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def jsonl_chunks(chunks: Iterable[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    """One JSON object per line, one bytes chunk per database chunk."""
    for rows in chunks:
        yield b"".join(orjson.dumps(record_values(row)) + b"\n" for row in rows)


def csv_chunks(chunks: Iterable[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    """A header line, then one line per record; one bytes chunk per database chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for rows in chunks:
        for row in rows:
            values = record_values(row)
            writer.writerow([_csv_cell(name, values[name]) for name in COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # the header of an empty export
        yield buffer.getvalue().encode()


def export_chunks(
    qs: QuerySet[RequestLog], fmt: str, *, chunk_size: int = CHUNK_ROWS
) -> Iterator[bytes]:
    """The export of ``qs`` in ``fmt`` (``csv`` or ``jsonl``), lazily: no query runs until
    the first chunk is asked for."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    chunks = request_log_chunks(qs, columns=COLUMNS, chunk_size=chunk_size)
    return csv_chunks(chunks) if fmt == "csv" else jsonl_chunks(chunks)


_END = object()


async def _pulled_one_by_one(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Each chunk (one database query) runs in Django's thread-sensitive executor."""
    pull = sync_to_async(next, thread_sensitive=True)
    while (chunk := await pull(chunks, _END)) is not _END:
        yield chunk


def export_filename(fmt: str, *, now: datetime | None = None) -> str:
    now = now or timezone.now()
    return f"audit-records-{now:%Y%m%dT%H%M%SZ}.{fmt}"


def export_response(
    qs: QuerySet[RequestLog], fmt: str, *, request: HttpRequest, chunk_size: int = CHUNK_ROWS
) -> StreamingHttpResponse:
    """A streamed download of ``qs``. ``fmt`` must be a key of FORMATS."""
    chunks = export_chunks(qs, fmt, chunk_size=chunk_size)
    content: Iterator[bytes] | AsyncIterator[bytes] = (
        _pulled_one_by_one(chunks) if isinstance(request, ASGIRequest) else chunks
    )
    response = StreamingHttpResponse(content, content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{export_filename(fmt)}"'
    response["Cache-Control"] = "no-store"  # audit data: never kept by a shared cache
    response["X-Accel-Buffering"] = "no"  # let a fronting nginx pass chunks through
    return response
