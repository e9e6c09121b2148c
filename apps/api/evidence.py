"""Evidence packs for the management API, under /api/v1/evidence/: request one, list them,
read one, download its files.

A pack is a whole organisation's evidence (its request log and change trail), so a token
needs an organisation-wide audit area: an org admin's or the organisation's auditor
token (a platform token: any organisation). A team's token, or a finance token, gets a
403; another organisation's pack is a 404, as a missing one. Thin: reads through
``apps.compliance.selectors``, the request through ``apps.compliance.services``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from ninja import Path, Router, Schema, Status
from pydantic import Field, field_validator

from apps.api.auth import AdminTokenAuth
from apps.api.models import AdminToken
from apps.api.schemas import (
    MAX_ID,
    BodyIn,
    ErrorOut,
    Slug,
    ValidationErrorOut,
    refuse_undocumented_query,
)
from apps.api.scope import token_area
from apps.compliance.models import EvidencePack, PackStatus
from apps.compliance.selectors import evidence_pack_may_request, evidence_packs_visible
from apps.compliance.services import evidence_pack_request
from apps.identity.roles import Capability
from apps.identity.scope import Area
from apps.tenancy.models import Organization

router = Router(auth=AdminTokenAuth(), tags=["evidence"])

ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut, 422: ValidationErrorOut}
PackId = Path(..., ge=1, le=MAX_ID, description="evidence pack id")
FILE_NAME = r"^[A-Za-z0-9._-]{1,100}$"
Day = Annotated[date, Field(strict=False, description="a UTC day, YYYY-MM-DD")]


class PackRequestIn(BodyIn):
    """``org`` may be left out by an organisation's token (its own); a platform token
    names it. ``period_end`` must not be before ``period_start`` (a 422 otherwise)."""

    org: Slug | None = Field(default=None, description="organisation name")
    period_start: Day
    period_end: Day


class PackFileOut(Schema):
    name: str
    bytes: int
    rows: int | None
    sha256: str


class PackOut(Schema):
    id: int
    organization: str
    period_start: date
    period_end: date
    status: str = Field(description="queued, running, done or failed")
    created_at: str
    finished_at: str | None
    error: str
    files: list[PackFileOut] = Field(description="downloadable once the pack is done")

    @field_validator("created_at", "finished_at", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value


def _area(request: HttpRequest) -> Area:
    token: AdminToken = request.auth  # type: ignore[attr-defined]
    area = token_area(token, Capability.AUDIT)
    if not area.everything and not area.org_ids:
        raise PermissionDenied("evidence packs are organisation-wide: a team's token has none")
    return area


def _out(pack: EvidencePack) -> dict[str, Any]:
    return {
        "id": pack.pk,
        "organization": pack.organization.name,
        "period_start": pack.period_start,
        "period_end": pack.period_end,
        "status": pack.status,
        "created_at": pack.created_at,
        "finished_at": pack.finished_at,
        "error": pack.error,
        "files": [
            {k: f.get(k) for k in ("name", "bytes", "rows", "sha256")} for f in pack.files or []
        ],
    }


def _pack(request: HttpRequest, pack_id: int) -> EvidencePack:
    pack = evidence_packs_visible(_area(request)).filter(pk=pack_id).first()
    if pack is None:
        raise Http404("evidence pack not found")
    return pack


@router.get("/packs", response={200: list[PackOut], **ERRORS}, summary="Evidence packs")
def evidence_packs_list(request: HttpRequest) -> list[dict[str, Any]]:
    """The packs of the token's organisation (every one for a platform token), newest
    first."""
    refuse_undocumented_query(request)
    return [_out(p) for p in evidence_packs_visible(_area(request))[:500]]


@router.post(
    "/packs",
    response={201: PackOut, **ERRORS, 400: ErrorOut, 404: ErrorOut},
    summary="Request an evidence pack (built in the background)",
)
def evidence_packs_create(request: HttpRequest, payload: PackRequestIn) -> Status[dict]:
    """Queued at once; follow ``GET /packs/{id}`` until it is done, then download its
    files. Naming another organisation is a 403."""
    refuse_undocumented_query(request)
    area = _area(request)
    token: AdminToken = request.auth  # type: ignore[attr-defined]
    if payload.org is None:
        organization = token.organization
        if organization is None:
            raise PermissionDenied("a platform token names the organisation (org)")
    else:
        organization = Organization.objects.filter(name=payload.org).first()
        if organization is None:
            raise Http404(f"organisation {payload.org!r} not found")
    if not evidence_pack_may_request(area, organization.pk):
        raise PermissionDenied("this organisation is outside what this token may see")
    pack = evidence_pack_request(
        organization=organization,
        period_start=payload.period_start,
        period_end=payload.period_end,
    )
    return Status(201, _out(pack))


@router.get(
    "/packs/{pack_id}", response={200: PackOut, 404: ErrorOut, **ERRORS}, summary="One pack"
)
def evidence_pack_get(request: HttpRequest, pack_id: int = PackId) -> dict[str, Any]:
    refuse_undocumented_query(request)
    return _out(_pack(request, pack_id))


FILE_RESPONSE = {
    "description": "The file (the PDF, or CSV / JSONL data), as stored when the pack was built",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


@router.get(
    "/packs/{pack_id}/files/{name}",
    response={404: ErrorOut, **ERRORS},
    openapi_extra={"responses": {200: FILE_RESPONSE}},
    summary="Download one file of a done pack",
)
def evidence_pack_file(
    request: HttpRequest,
    pack_id: int = PackId,
    name: str = Path(..., pattern=FILE_NAME),
) -> FileResponse:
    """By the name in the pack's ``files`` (never a storage path): 404 until the pack is
    done, or for a name it does not have."""
    refuse_undocumented_query(request)
    pack = _pack(request, pack_id)
    entry = pack.file_entry(name)
    if pack.status != PackStatus.DONE or entry is None:
        raise Http404("no such file in this pack")
    try:
        handle = default_storage.open(entry["path"], "rb")
    except FileNotFoundError:
        raise Http404("the file is missing from storage") from None
    return FileResponse(
        handle,
        as_attachment=True,
        filename=entry["name"],
        content_type="application/octet-stream",
    )
