"""The evidence pack's PDF (reportlab): what a reviewer reads first. Every figure in it
comes from the data files delivered beside it, which it lists with their checksums."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    LongTable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    TableStyle,
)

from apps.compliance.selectors import PeriodEvidence

# Changes listed one per row in the PDF; all of them are in changes.csv/.jsonl.
MAX_CHANGE_ROWS = 500
_PLAIN = str.maketrans({"→": "->", "←": "<-", "…": "...", "–": "-", "—": "-"})


@dataclass(frozen=True, slots=True)
class ChangeLine:
    when: datetime
    actor: str
    action: str
    object_type: str
    object_repr: str
    fields: str


@dataclass(frozen=True, slots=True)
class FileLine:
    name: str
    rows: int | None
    sha256: str


@dataclass(frozen=True, slots=True)
class PackDocument:
    organization: str
    period_start: date
    period_end: date
    generated_at: datetime
    evidence: PeriodEvidence
    changes_total: int
    changes_org: int
    changes: Sequence[ChangeLine]
    verification_ok: bool
    verification_summary: str
    files: Sequence[FileLine]


def plain(text: object) -> str:
    """Text the PDF's standard fonts can draw (WinAnsi), escaped for Paragraph markup."""
    value = str(text).translate(_PLAIN).encode("cp1252", "replace").decode("cp1252")
    return escape(value)


def usd(amount: Decimal) -> str:
    return f"{Decimal(amount).quantize(Decimal('0.000001'), rounding=ROUND_HALF_UP):f}"


class _Builder:
    def __init__(self) -> None:
        styles = getSampleStyleSheet()
        self.h1, self.h2, self.body = styles["Title"], styles["Heading2"], styles["BodyText"]
        self.cell = ParagraphStyle("cell", parent=self.body, fontSize=8, leading=10)
        self.story: list[Flowable] = []

    def heading(self, text: str) -> None:
        self.story.append(Paragraph(plain(text), self.h2))

    def line(self, text: str) -> None:
        self.story.append(Paragraph(plain(text), self.body))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]], widths: list) -> None:
        data = [[Paragraph(f"<b>{plain(h)}</b>", self.cell) for h in header]]
        data += [[Paragraph(plain(v), self.cell) for v in row] for row in rows]
        table = LongTable(data, colWidths=widths, repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        self.story.append(table)
        self.story.append(Spacer(1, 4 * mm))


def pack_pdf_write(path: Path, doc: PackDocument) -> None:
    b = _Builder()
    ev = doc.evidence
    b.story.append(Paragraph(plain(f"Compliance evidence pack: {doc.organization}"), b.h1))
    b.line(f"Period: {doc.period_start} to {doc.period_end} (UTC days, both included)")
    b.line(f"Generated: {doc.generated_at:%Y-%m-%d %H:%M:%S} UTC")
    b.line(f"Requests: {ev.requests}")
    b.line(f"Refused requests: {ev.refused}")
    b.line(f"Cost: {usd(ev.cost_usd)} USD")
    b.line(f"Policy changes: {doc.changes_total}")
    b.line(f"Audit chain verification: {'OK' if doc.verification_ok else 'FAILED'}")

    b.heading("1. Model access")
    b.line("Who called which model (the model that served the request, or the one asked for).")
    if ev.models:
        b.table(
            ("Key / user", "Model", "Requests", "Refused", "Cost (USD)"),
            [(r.who, r.target, r.requests, r.refused, usd(r.cost_usd)) for r in ev.models],
            [60 * mm, 50 * mm, 20 * mm, 18 * mm, 30 * mm],
        )
    else:
        b.line("No model requests recorded.")

    b.heading("2. Tool access")
    if ev.tools:
        b.table(
            ("Key / user", "Tool", "Calls", "Refused", "Cost (USD)"),
            [(r.who, r.target, r.requests, r.refused, usd(r.cost_usd)) for r in ev.tools],
            [60 * mm, 50 * mm, 20 * mm, 18 * mm, 30 * mm],
        )
    else:
        b.line("No tool calls recorded.")

    b.heading("3. Refused requests by reason")
    b.line(f"Refused requests: {ev.refused}")
    if ev.refusals:
        b.table(
            ("Status", "Error code", "Requests"),
            [(r.status_code, r.error_code or "(none)", r.count) for r in ev.refusals],
            [25 * mm, 90 * mm, 25 * mm],
        )

    b.heading("4. Guardrail findings by type")
    if ev.findings:
        b.table(
            ("Finding type", "Requests"),
            [(name, count) for name, count in ev.findings],
            [90 * mm, 25 * mm],
        )
    else:
        b.line("No guardrail findings recorded.")

    b.heading("5. Policy changes")
    b.line(
        f"Policy changes in the period: {doc.changes_total} "
        f"({doc.changes_org} to this organisation, "
        f"{doc.changes_total - doc.changes_org} platform-wide)"
    )
    if doc.changes:
        b.table(
            ("When (UTC)", "Who", "Action", "What", "Fields"),
            [
                (
                    f"{c.when:%Y-%m-%d %H:%M:%S}",
                    c.actor,
                    c.action,
                    f"{c.object_type}: {c.object_repr}",
                    c.fields,
                )
                for c in doc.changes
            ],
            [30 * mm, 30 * mm, 16 * mm, 60 * mm, 42 * mm],
        )
        if doc.changes_total > len(doc.changes):
            b.line(f"First {len(doc.changes)} changes listed; all are in changes.csv.")

    b.heading("6. Audit chain verification")
    b.line(
        "The organisation's whole audit log (not only this period): hash links, record "
        "hashes and signed checkpoints."
    )
    b.line(f"Result: {'OK' if doc.verification_ok else 'FAILED'}")
    for text in doc.verification_summary.splitlines():
        b.line(text)

    b.heading("7. Data files")
    b.line("Delivered with this PDF; every figure above can be recomputed from them.")
    b.table(
        ("File", "Rows", "SHA-256"),
        [(f.name, "" if f.rows is None else f.rows, f.sha256) for f in doc.files],
        [35 * mm, 18 * mm, 125 * mm],
    )

    pdf = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        title=f"Evidence pack {doc.organization} {doc.period_start}..{doc.period_end}",
        author="Odock",
    )
    pdf.build(b.story)
