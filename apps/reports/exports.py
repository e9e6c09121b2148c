"""A built spend report as a file: CSV, XLSX (openpyxl) or JSON.

Every format carries the rows, a totals row and budget vs actual (XLSX: a second sheet;
CSV: a second section after a blank line). CSV and JSON hold money as exact decimal
strings (``apps.core.money.usd_exact``: no trailing zeros, no exponent); XLSX cells are
spreadsheet numbers (IEEE doubles, 15 significant digits, as Excel itself keeps them), so
its "About" sheet also states the exact total as text. Text that a spreadsheet would run
as a formula (a model name is whatever a client sent) is prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from apps.core.money import usd_exact
from apps.reports.selectors import FIGURES, BudgetActual, Figures, SpendReportData

GROUP_HEADERS = {
    "org": "organization",
    "team": "team",
    "project": "project",
    "key": "key",
    "model": "model",
    "provider": "provider",
    "user": "user",
    "end_user": "end_user",
}
FIGURE_HEADERS = [*FIGURES, "cost_usd"]
BUDGET_HEADERS = [
    "organization",
    "level",
    "model",
    "period",
    "period_key",
    "period_start",
    "period_end",
    "limit_usd",
    "spent_usd",
    "remaining_usd",
    "percent_used",
    "hard",
]
TOTAL_LABEL = "TOTAL"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}
MONEY_FORMAT = "#,##0.000000"


@dataclass(frozen=True, slots=True)
class ReportFile:
    filename: str
    content_type: str
    content: bytes


def safe_text(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection) in text cells."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def money_text(value: Decimal) -> str:
    """Exact money in files and JSON (people's pages use ``usd_display``)."""
    return usd_exact(value)


def report_headers(report: SpendReportData) -> list[str]:
    return ["period", *(GROUP_HEADERS[g] for g in report.spec.group_by), *FIGURE_HEADERS]


def _figure_values(figures: Figures) -> list[Any]:
    return [*(getattr(figures, name) for name in FIGURES), figures.cost_usd]


def _rows(report: SpendReportData) -> Iterator[list[Any]]:
    for row in report.rows:
        yield [
            row.period,
            *(safe_text(row.groups[g]) for g in report.spec.group_by),
            *_figure_values(row.figures),
        ]


def _totals(report: SpendReportData) -> list[Any]:
    return [TOTAL_LABEL, *("" for _ in report.spec.group_by), *_figure_values(report.totals)]


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def _budget_values(b: BudgetActual) -> list[Any]:
    return [
        b.organization,
        safe_text(b.level),
        safe_text(b.model),
        b.period,
        b.period_key,
        _when(b.period_start),
        _when(b.period_end),
        b.limit_usd,
        b.spent_usd,
        b.remaining_usd,
        b.percent_used if b.percent_used is not None else "",
        "hard" if b.hard else "soft",
    ]


def report_filename(report: SpendReportData, extension: str) -> str:
    scope = "-".join(report.organizations) if report.spec.organization_ids is not None else "all"
    spec = report.spec
    return f"spend_{scope}_{spec.start:%Y-%m-%d}_{spec.end:%Y-%m-%d}.{extension}"


def report_csv(report: SpendReportData) -> bytes:
    """Rows and a totals row, a blank line, then the budget vs actual section."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")

    def plain(values: list[Any]) -> list[Any]:
        return [money_text(v) if isinstance(v, Decimal) else v for v in values]

    writer.writerow(report_headers(report))
    for values in _rows(report):
        writer.writerow(plain(values))
    writer.writerow(plain(_totals(report)))
    writer.writerow([])
    writer.writerow(["Budget vs actual"])
    writer.writerow(BUDGET_HEADERS)
    for budget in report.budgets:
        writer.writerow(plain(_budget_values(budget)))
    return out.getvalue().encode("utf-8")


def _styled(sheet: WriteOnlyWorksheet, values: list[Any], *, bold: bool = False) -> list[Any]:
    cells = []
    for value in values:
        cell = WriteOnlyCell(sheet, value=value)
        if bold:
            cell.font = Font(bold=True)
        if isinstance(value, Decimal):
            cell.number_format = MONEY_FORMAT
        cells.append(cell)
    return cells


def report_xlsx(report: SpendReportData) -> bytes:
    """Sheet "Spend" (rows, a bold totals row), "Budget vs actual", and "About"."""
    workbook = Workbook(write_only=True)
    spend = workbook.create_sheet("Spend")
    spend.freeze_panes = "A2"
    spend.append(_styled(spend, report_headers(report), bold=True))
    for values in _rows(report):
        spend.append(_styled(spend, values))
    spend.append(_styled(spend, _totals(report), bold=True))

    budgets = workbook.create_sheet("Budget vs actual")
    budgets.append(_styled(budgets, BUDGET_HEADERS, bold=True))
    for budget in report.budgets:
        budgets.append(_styled(budgets, _budget_values(budget)))

    about = workbook.create_sheet("About")
    for label, value in report_about(report):
        about.append([label, value])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def report_about(report: SpendReportData) -> list[tuple[str, str]]:
    spec = report.spec
    return [
        ("Report", "Odock spend report"),
        ("Organisations", ", ".join(report.organizations) or "all"),
        ("From (UTC, inclusive)", spec.start.isoformat()),
        ("To (UTC, exclusive)", spec.end.isoformat()),
        ("Grouping", ", ".join(GROUP_HEADERS[g] for g in spec.group_by) or "none"),
        ("Granularity", spec.granularity),
        ("Total cost (USD, exact)", money_text(report.totals.cost_usd)),
        ("Generated at", report.generated_at.isoformat()),
        ("Roll-ups last updated", _when(report.rolled_up_at) or "never"),
        ("Partial", _partial_text(report)),
    ]


def _partial_text(report: SpendReportData) -> str:
    if report.partial_from is None:
        return "no: every hour in the range was whole when last rolled up"
    return (
        f"yes: the hour from {report.partial_from:%Y-%m-%d %H:%M} UTC holds requests up to "
        f"the last roll-up only (rows marked partial)"
    )


def report_json(report: SpendReportData) -> dict[str, Any]:
    """JSON-safe: money as decimal strings, never floats."""

    def figures(f: Figures) -> dict[str, Any]:
        return {**{name: getattr(f, name) for name in FIGURES}, "cost_usd": money_text(f.cost_usd)}

    spec = report.spec
    return {
        "start": spec.start.isoformat(),
        "end": spec.end.isoformat(),
        "group_by": list(spec.group_by),
        "granularity": spec.granularity,
        "organizations": report.organizations if spec.organization_ids is not None else None,
        "generated_at": report.generated_at.isoformat(),
        "rolled_up_at": _when(report.rolled_up_at) or None,
        "partial_from": _when(report.partial_from) or None,
        "rows": [
            {
                "period": row.period,
                **{GROUP_HEADERS[g]: row.groups[g] for g in spec.group_by},
                **figures(row.figures),
                "partial": row.partial,
            }
            for row in report.rows
        ],
        "totals": figures(report.totals),
        "budgets": [
            {
                "budget_id": b.budget_id,
                "organization": b.organization,
                "level": b.level,
                "model": b.model,
                "period": b.period,
                "period_key": b.period_key,
                "period_start": _when(b.period_start) or None,
                "period_end": _when(b.period_end) or None,
                "limit_usd": money_text(b.limit_usd),
                "spent_usd": money_text(b.spent_usd),
                "remaining_usd": money_text(b.remaining_usd),
                "percent_used": None if b.percent_used is None else money_text(b.percent_used),
                "hard": b.hard,
            }
            for b in report.budgets
        ],
    }


def report_file(report: SpendReportData, fmt: str) -> ReportFile:
    """The report in ``csv``, ``xlsx`` or ``json``."""
    if fmt == "csv":
        content = report_csv(report)
    elif fmt == "xlsx":
        content = report_xlsx(report)
    elif fmt == "json":
        content = orjson.dumps(report_json(report))
    else:
        raise ValueError(f"unknown report format {fmt!r}")
    return ReportFile(report_filename(report, fmt), CONTENT_TYPES[fmt], content)
