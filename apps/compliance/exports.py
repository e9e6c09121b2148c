"""The data behind an evidence pack, as CSV and JSONL files: the period's request records
and the configuration changes. Streamed from a server-side cursor into a file, so a period
of millions of records takes constant memory."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db.models import JSONField, QuerySet

from apps.audit.models import RequestLog
from apps.compliance.models import ConfigChange
from apps.compliance.trail import json_value

# Every column of the record but the captured prompt and response: an evidence pack
# travels to reviewers, and the content capture policy did not agree to that.
RECORD_EXCLUDED = frozenset({"content"})
CHUNK = 2000


@dataclass(frozen=True, slots=True)
class DataFile:
    name: str
    path: Path
    rows: int


def record_columns() -> list[str]:
    return [f.attname for f in RequestLog._meta.concrete_fields if f.name not in RECORD_EXCLUDED]


def change_columns() -> list[str]:
    return [f.attname for f in ConfigChange._meta.concrete_fields]


def _json_columns(model: type, columns: Sequence[str]) -> frozenset[str]:
    return frozenset(
        f.attname
        for f in model._meta.concrete_fields
        if isinstance(f, JSONField) and f.attname in columns
    )


def csv_cell(value: Any, is_json: bool) -> str:
    """JSON fields as JSON text, money as a decimal string, times as ISO 8601, None empty."""
    if is_json:
        return json.dumps(json_value(value), sort_keys=True, ensure_ascii=False)
    if value is None:
        return ""
    value = json_value(value)
    return value if isinstance(value, str) else json.dumps(value)


def _rows(qs: QuerySet, columns: Sequence[str]) -> Iterator[tuple]:
    return qs.order_by("created_at", "id").values_list(*columns).iterator(chunk_size=CHUNK)


def write_csv(
    path: Path, columns: Sequence[str], rows: Iterable[tuple], json_cols: frozenset
) -> int:
    count = 0
    flags = [c in json_cols for c in columns]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(v, j) for v, j in zip(row, flags, strict=True)])
            count += 1
    return count


def write_jsonl(path: Path, columns: Sequence[str], rows: Iterable[tuple]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            record = {c: json_value(v) for c, v in zip(columns, row, strict=True)}
            out.write(json.dumps(record, sort_keys=True, ensure_ascii=False))
            out.write("\n")
            count += 1
    return count


def data_files_write(
    directory: Path, records: QuerySet[RequestLog], changes: QuerySet[ConfigChange]
) -> list[DataFile]:
    """records.csv/.jsonl and changes.csv/.jsonl in ``directory``."""
    files = []
    for stem, qs, columns in (
        ("records", records, record_columns()),
        ("changes", changes, change_columns()),
    ):
        json_cols = _json_columns(qs.model, columns)
        path = directory / f"{stem}.csv"
        files.append(
            DataFile(path.name, path, write_csv(path, columns, _rows(qs, columns), json_cols))
        )
        path = directory / f"{stem}.jsonl"
        files.append(DataFile(path.name, path, write_jsonl(path, columns, _rows(qs, columns))))
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
