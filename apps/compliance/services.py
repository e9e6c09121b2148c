"""Writes of the compliance domain: requesting, building and deleting evidence packs.

Building is idempotent: a pack is claimed with a compare-and-set on its status (a second
delivery of the same task finds it running or done and does nothing), and a re-run
(after a failure, or a rebuild asked for in the admin) replaces the pack's files."""

from __future__ import annotations

import logging
import tempfile
from datetime import date, timedelta
from pathlib import Path

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.chain import chain_verify
from apps.compliance import exports, selectors
from apps.compliance.models import ConfigChange, EvidencePack, PackStatus
from apps.compliance.pdf import MAX_CHANGE_ROWS, ChangeLine, FileLine, PackDocument, pack_pdf_write
from apps.tenancy.models import Organization

log = logging.getLogger(__name__)

PDF_NAME = "evidence.pdf"
# A pack "running" for longer than the task's hard time limit lost its worker.
BUILD_TIME_LIMIT = 1800
STALE_RUNNING = timedelta(seconds=BUILD_TIME_LIMIT + 60)


def _enqueue(pack_id: int) -> None:
    from apps.compliance.tasks import evidence_pack_build as task

    transaction.on_commit(lambda: task.delay(pack_id))


@transaction.atomic
def evidence_pack_request(
    *,
    organization: Organization,
    period_start: date,
    period_end: date,
    requested_by: AbstractBaseUser | None = None,
) -> EvidencePack:
    """A queued pack; the build task is enqueued once this transaction commits."""
    pack = EvidencePack(
        organization=organization,
        period_start=period_start,
        period_end=period_end,
        requested_by=requested_by,
    )
    pack.full_clean()
    pack.save()
    _enqueue(pack.pk)
    return pack


@transaction.atomic
def evidence_pack_rebuild(*, pack: EvidencePack) -> bool:
    """Queue a finished (or failed) pack again; False if it is queued or running now."""
    updated = EvidencePack.objects.filter(
        pk=pack.pk, status__in=[PackStatus.DONE, PackStatus.FAILED]
    ).update(status=PackStatus.QUEUED, error="", finished_at=None)
    if updated:
        _enqueue(pack.pk)
    return bool(updated)


def _files_delete(files: list[dict]) -> None:
    for entry in files or []:
        if entry.get("path"):
            default_storage.delete(entry["path"])


def evidence_pack_delete(*, pack: EvidencePack) -> None:
    """The row and its files."""
    files = list(pack.files or [])
    pack.delete()
    transaction.on_commit(lambda: _files_delete(files))


def _claim(pack_id: int) -> bool:
    now = timezone.now()
    claimable = Q(status__in=[PackStatus.QUEUED, PackStatus.FAILED]) | Q(
        status=PackStatus.RUNNING, started_at__lt=now - STALE_RUNNING
    )
    return bool(
        EvidencePack.objects.filter(claimable, pk=pack_id).update(
            status=PackStatus.RUNNING, started_at=now, finished_at=None, error=""
        )
    )


def _storage_dir(pack: EvidencePack) -> str:
    return f"evidence/org-{pack.organization_id}/pack-{pack.pk}"


def _who(change: ConfigChange) -> str:
    """The person or tool, and the role behind the change when it says more."""
    if change.actor_role and change.actor_role != change.actor:
        return f"{change.actor} ({change.actor_role})"
    return change.actor


def _changed_fields(change: ConfigChange) -> str:
    return ", ".join(sorted(change.changes or {}))


def _document(pack: EvidencePack, files: list[FileLine]) -> PackDocument:
    org_id = pack.organization_id
    changes = selectors.changes_in_period(org_id, pack.period_start, pack.period_end)
    total = changes.count()
    report = chain_verify(organization_id=org_id)
    return PackDocument(
        organization=pack.organization.name,
        period_start=pack.period_start,
        period_end=pack.period_end,
        generated_at=timezone.now(),
        evidence=selectors.period_evidence(org_id, pack.period_start, pack.period_end),
        changes_total=total,
        changes_org=changes.filter(organization_id=org_id).count(),
        changes=[
            ChangeLine(
                c.created_at, _who(c), c.action, c.object_type, c.object_repr, _changed_fields(c)
            )
            for c in changes[:MAX_CHANGE_ROWS]
        ],
        verification_ok=report.ok,
        verification_summary=report.summary(),
        files=files,
    )


def _build(pack: EvidencePack, workdir: Path) -> tuple[list[dict], dict]:
    org_id = pack.organization_id
    data = exports.data_files_write(
        workdir,
        selectors.records_in_period(org_id, pack.period_start, pack.period_end),
        selectors.changes_in_period(org_id, pack.period_start, pack.period_end),
    )
    lines = [FileLine(f.name, f.rows, exports.sha256_of(f.path)) for f in data]
    document = _document(pack, lines)
    pdf_path = workdir / PDF_NAME
    pack_pdf_write(pdf_path, document)
    outputs = [(PDF_NAME, pdf_path, None, exports.sha256_of(pdf_path))]
    outputs += [(f.name, f.path, f.rows, line.sha256) for f, line in zip(data, lines, strict=True)]
    directory = _storage_dir(pack)
    manifest = []
    for name, path, rows, sha256 in outputs:
        target = f"{directory}/{name}"
        default_storage.delete(target)  # a re-run replaces, never adds "name_x7Gq.csv"
        with path.open("rb") as f:
            stored = default_storage.save(target, File(f, name=name))
        manifest.append(
            {
                "name": name,
                "path": stored,
                "bytes": path.stat().st_size,
                "rows": rows,
                "sha256": sha256,
            }
        )
    ev = document.evidence
    summary = {
        "requests": ev.requests,
        "refused": ev.refused,
        "cost_usd": str(ev.cost_usd),
        "refusals": [[r.status_code, r.error_code, r.count] for r in ev.refusals],
        "findings": [[name, n] for name, n in ev.findings],
        "policy_changes": document.changes_total,
        "verification_ok": document.verification_ok,
        "verification": document.verification_summary,
    }
    return manifest, summary


def evidence_pack_build(*, pack_id: int) -> EvidencePack | None:
    """Build the pack's PDF and data files; None when another run has it (or had it)."""
    if not _claim(pack_id):
        return None
    pack = EvidencePack.objects.select_related("organization").get(pk=pack_id)
    old_files = list(pack.files or [])
    try:
        with tempfile.TemporaryDirectory(prefix="odock-evidence-") as tmp:
            manifest, summary = _build(pack, Path(tmp))
    except Exception as exc:
        log.exception("evidence pack %s failed", pack_id)
        EvidencePack.objects.filter(pk=pack_id, status=PackStatus.RUNNING).update(
            status=PackStatus.FAILED,
            finished_at=timezone.now(),
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        pack.refresh_from_db()
        return pack
    kept = {entry["path"] for entry in manifest}
    _files_delete([f for f in old_files if f.get("path") not in kept])
    EvidencePack.objects.filter(pk=pack_id).update(
        status=PackStatus.DONE,
        finished_at=timezone.now(),
        files=manifest,
        summary=summary,
        error="",
    )
    pack.refresh_from_db()
    return pack
