"""The management API (django-ninja), mounted at /api/ by odock/urls.py.

Endpoints are thin: scope and reads through ``apps.api.selectors``, writes through the
keys app's services. Every endpoint needs an admin token; the OpenAPI schema and the docs
page do not, so clients can be generated without one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Path, Query, Router, Status
from ninja.errors import HttpError
from ninja.operation import Operation

from apps.api import selectors
from apps.api.auth import AdminTokenAuth
from apps.api.models import AdminToken
from apps.api.schemas import (
    MAX_ID,
    ErrorOut,
    KeyCreateByIdIn,
    KeyCreateIn,
    KeyListQuery,
    KeyOut,
    KeyPageOut,
    KeyRotatedOut,
    KeyRotateIn,
    KeySecretOut,
    OrganizationOut,
    PolicyOut,
    SpendOut,
    SpendQuery,
    ValidationErrorOut,
    refuse_undocumented_query,
)
from apps.identity.roles import Capability
from apps.keys.models import VirtualKey
from apps.keys.services import IssuedKey, key_issue, key_revoke, key_rotate
from apps.policies.selectors import effective_policy_for_key
from apps.reports.api import router as reports_router


class OdockAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        """Plain view names (``keys_list``): what generated clients name their methods."""
        return operation.view_func.__name__


api = OdockAPI(
    title="Odock management API",
    version="1",
    description=(
        "Manage virtual keys and read effective policies and spend. Authenticate with "
        "`Authorization: Bearer odk-admin-…`; an organisation's token sees only that "
        "organisation, a team's token only that team. A token acts with its role "
        "(org_admin, team_admin, finance, auditor; platform tokens are platform admins): "
        "what the role may not do is a 403. Money is a decimal string, never a JSON number."
    ),
    urls_namespace="odock-api",
    openapi_url="/v1/openapi.json",
    docs_url="/v1/docs",
)
v1 = Router(auth=AdminTokenAuth(), tags=["v1"])

# Every operation answers 401 without a live token and 422 for input its schema refuses
# (or a rule the schema cannot state, named in its description); 400 is a body that is
# not JSON at all. Each operation adds what else it can answer.
# 403: what the token's role may not do (a finance token creating a key).
ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut, 422: ValidationErrorOut}
BODY_ERRORS: dict[int, Any] = {**ERRORS, 400: ErrorOut}
READ_ERRORS: dict[int, Any] = {**ERRORS, 404: ErrorOut}
KeyId = Path(..., ge=1, le=MAX_ID, description="key id")


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden"}, status=403)


@api.exception_handler(selectors.AmbiguousName)
def _ambiguous(request: HttpRequest, exc: selectors.AmbiguousName) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=409)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Django validation (services' full_clean, selectors) in ninja's 422 shape."""
    errors = exc.message_dict if hasattr(exc, "error_dict") else {NON_FIELD_ERRORS: exc.messages}
    detail = [
        {"type": "value_error", "loc": [] if field == NON_FIELD_ERRORS else [field], "msg": msg}
        for field, messages in errors.items()
        for msg in messages
    ]
    return api.create_response(request, {"detail": detail}, status=422)


def _token(request: HttpRequest) -> AdminToken:
    return request.auth  # type: ignore[attr-defined]


def cursor_encode(last_id: int) -> str:
    """``k1.<id>``: the last id of the page (keys are listed by id). Clients pass it back
    as it is; the schema's pattern says which cursors exist, so every one it allows works."""
    return f"k1.{last_id}"


def cursor_decode(cursor: str | None) -> int:
    """The id the page starts after; 0 for the first page (the schema checked the form)."""
    return int(cursor.removeprefix("k1.")) if cursor else 0


@v1.get(
    "/keys",
    response={200: KeyPageOut, **READ_ERRORS, 403: ErrorOut, 409: ErrorOut},
    summary="List keys",
)
def keys_list(request: HttpRequest, filters: Query[KeyListQuery]) -> dict[str, Any]:
    """Keys visible to the token, ordered by id, one page at a time (revoked ones only
    with ``include_revoked``). A team or project named without its parent is looked up
    in the token's scope: a name several share there is a 409 (give the parent too)."""
    refuse_undocumented_query(request, KeyListQuery)
    token = _token(request)
    scope = selectors.scope_resolve(
        token=token, org=filters.org, team=filters.team, project=filters.project
    )
    keys, more = selectors.key_page_visible(
        token=token,
        scope=scope,
        include_revoked=filters.include_revoked,
        after_id=cursor_decode(filters.cursor),
        limit=filters.limit,
    )
    return {"items": keys, "next_cursor": cursor_encode(keys[-1].pk) if more else None}


@v1.post(
    "/keys",
    response={201: KeySecretOut, **BODY_ERRORS, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Create a key (its secret is returned once)",
)
def keys_create(request: HttpRequest, payload: KeyCreateIn) -> Status[IssuedKey]:
    """Name the project by ``project_id``, or by its name (with ``team`` and ``org`` when
    several projects share it: 409 otherwise). ``expires_at`` must be in the future (a
    422 otherwise); a refused request creates nothing."""
    refuse_undocumented_query(request)
    token = _token(request)
    if isinstance(payload, KeyCreateByIdIn):
        project = selectors.project_get_visible(
            token=token, project_id=payload.project_id, capability=Capability.MANAGE
        )
    else:
        project = selectors.scope_resolve(
            token=token,
            org=payload.org,
            team=payload.team,
            project=payload.project,
            capability=Capability.MANAGE,
        ).project
    assert project is not None  # both shapes name a project
    try:
        issued = key_issue(project=project, name=payload.name, expires_at=payload.expires_at)
    except (ValidationError, IntegrityError):
        # full_clean refuses a taken name; IntegrityError is a concurrent create winning.
        if selectors.key_name_taken(project=project, name=payload.name):
            raise HttpError(
                409, f"a key named {payload.name!r} already exists in this project"
            ) from None
        raise
    return Status(201, issued)


@v1.post("/keys/{key_id}/revoke", response={200: KeyOut, **READ_ERRORS}, summary="Revoke a key")
def keys_revoke(request: HttpRequest, key_id: int = KeyId) -> VirtualKey:
    """Idempotent: revoking a revoked key returns it unchanged."""
    refuse_undocumented_query(request)
    key = selectors.key_get_visible(
        token=_token(request), key_id=key_id, capability=Capability.MANAGE
    )
    return key_revoke(key=key)


@v1.post(
    "/keys/{key_id}/rotate",
    response={200: KeyRotatedOut, **BODY_ERRORS, 404: ErrorOut, 409: ErrorOut},
    summary="Rotate a key (the new secret is returned once)",
)
def keys_rotate(
    request: HttpRequest, key_id: int = KeyId, payload: KeyRotateIn | None = None
) -> IssuedKey:
    """The previous secret keeps working for ``grace_seconds`` so clients can roll over.
    The body is optional: none (or ``null``) takes the default grace."""
    refuse_undocumented_query(request)
    key = selectors.key_get_visible(
        token=_token(request), key_id=key_id, capability=Capability.MANAGE
    )
    if key.is_revoked:
        raise HttpError(409, "a revoked key cannot be rotated")
    grace_seconds = payload.grace_seconds if payload is not None else None
    grace = timedelta(seconds=grace_seconds) if grace_seconds is not None else None
    return key_rotate(key=key, grace=grace)


@v1.get(
    "/keys/{key_id}/policy",
    response={200: PolicyOut, **READ_ERRORS},
    summary="A key's effective policy",
)
def keys_policy(request: HttpRequest, key_id: int = KeyId) -> dict[str, Any]:
    """Every level's rules and the merged result, as the gateway enforces them."""
    refuse_undocumented_query(request)
    key = selectors.key_get_visible(token=_token(request), key_id=key_id)
    return effective_policy_for_key(key)


@v1.get(
    "/spend",
    response={200: list[SpendOut], **READ_ERRORS, 403: ErrorOut, 409: ErrorOut},
    summary="Current spend against every visible budget",
)
def spend_list(request: HttpRequest, filters: Query[SpendQuery]) -> list[selectors.BudgetSpend]:
    """Budgets that govern the selected node and those attached below it, with their
    settled spend in the current period (from the request log). Names as for keys."""
    refuse_undocumented_query(request, SpendQuery)
    token = _token(request)
    scope = selectors.scope_resolve(
        token=token,
        org=filters.org,
        team=filters.team,
        project=filters.project,
        key_id=filters.key,
        capability=Capability.SPEND,
    )
    return selectors.budget_spend_list(token=token, scope=scope)


@v1.get("/orgs", response={200: list[OrganizationOut], **ERRORS}, summary="Organisations")
def orgs_list(request: HttpRequest) -> Any:
    """Visible organisations with their teams and projects."""
    refuse_undocumented_query(request)
    return selectors.organization_list_visible(token=_token(request))


api.add_router("/v1/", v1)
api.add_router("/v1/audit/", "apps.api.audit.router")  # search, export, change trail
api.add_router("/v1/evidence/", "apps.api.evidence.router")  # evidence packs
api.add_router("/v1/reports/", reports_router)  # finance spend report (apps.reports)
