"""The SCIM endpoints: django-scim2's views, with every write in one transaction and
attributed to the token in the change trail, and pages capped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django_scim import constants, exceptions
from django_scim import views as scim_views

from apps.compliance.context import changes_by


@contextmanager
def _write(request: HttpRequest) -> Iterator[None]:
    """All or nothing (an error response rolls everything back), by the token's name."""
    token = request.scim_token  # type: ignore[attr-defined]
    with changes_by(token.actor_name), transaction.atomic():
        yield


ALWAYS_RETURNED = frozenset({"id", "schemas"})


def _names(value: Any) -> list[tuple[str, str | None]]:
    """``attributes=userName,name.givenName`` as (attribute, sub-attribute) pairs, URN
    prefixes dropped, lower-cased (attribute names are case-insensitive)."""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    pairs = []
    for item in str(value or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("urn:"):
            item = item.rsplit(":", 1)[-1]
        attr, _, sub = item.partition(".")
        pairs.append((attr.lower(), sub.lower() or None))
    return pairs


def project(doc: dict[str, Any], attributes: Any, excluded: Any) -> dict[str, Any]:
    """RFC 7644 §3.9: only ``attributes`` (plus what is always returned), or all but
    ``excludedAttributes``."""
    wanted, unwanted = _names(attributes), _names(excluded)
    if not wanted and not unwanted:
        return doc
    shaped: dict[str, Any] = {}
    for key, value in doc.items():
        lower = key.lower()
        if key in ALWAYS_RETURNED:
            shaped[key] = value
            continue
        if wanted:
            subs = [sub for attr, sub in wanted if attr == lower]
            if not subs:
                continue
            if None in subs or not isinstance(value, dict):
                shaped[key] = value
            else:
                kept = {k: v for k, v in value.items() if k.lower() in subs}
                if kept:
                    shaped[key] = kept
            continue
        subs = [sub for attr, sub in unwanted if attr == lower]
        if None in subs:
            continue
        if subs and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k.lower() not in subs}
        shaped[key] = value
    return shaped


def _shaped(response: HttpResponse, attributes: Any, excluded: Any) -> HttpResponse:
    if not (attributes or excluded) or response.status_code >= 300:
        return response
    doc = json.loads(response.content)
    if "Resources" in doc:
        doc["Resources"] = [project(r, attributes, excluded) for r in doc["Resources"]]
    else:
        doc = project(doc, attributes, excluded)
    response.content = json.dumps(doc).encode()
    return response


class _Resource:
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)  # type: ignore[misc]
        query = request.GET
        return _shaped(response, query.get("attributes"), query.get("excludedAttributes"))

    def _page(self, request: HttpRequest) -> tuple[int, int]:
        start, count = super()._page(request)  # type: ignore[misc]
        if count < 0:
            raise exceptions.BadRequestError("Invalid count (must be >= 0)")
        return start, min(count, settings.ODOCK_SCIM_MAX_RESULTS)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _write(request):
            response = super().post(request, *args, **kwargs)  # type: ignore[misc]
        if request.path.endswith("/.search"):
            body = json.loads(request.body or b"{}")
            return _shaped(response, body.get("attributes"), body.get("excludedAttributes"))
        return response

    def put(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _write(request):
            return super().put(request, *args, **kwargs)  # type: ignore[misc]

    def patch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _write(request):
            return super().patch(request, *args, **kwargs)  # type: ignore[misc]

    def delete(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _write(request):
            return super().delete(request, *args, **kwargs)  # type: ignore[misc]


class UsersView(_Resource, scim_views.UsersView):
    pass


class GroupsView(_Resource, scim_views.GroupsView):
    pass


class UserSearchView(_Resource, scim_views.UserSearchView):
    pass


class GroupSearchView(_Resource, scim_views.GroupSearchView):
    pass


def _list_response(resources: list[dict[str, Any]]) -> HttpResponse:
    doc = {
        "schemas": [constants.SchemaURI.LIST_RESPONSE],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }
    return HttpResponse(json.dumps(doc), content_type=constants.SCIM_CONTENT_TYPE)


def _single(doc: dict[str, Any] | None, uuid: str) -> HttpResponse:
    if doc is None:
        raise exceptions.NotFoundError(uuid)
    return HttpResponse(json.dumps(doc), content_type=constants.SCIM_CONTENT_TYPE)


class ResourceTypesView(scim_views.ResourceTypesView):
    """As the library's, with the ListResponse fields RFC 7644 §3.4.2 requires and a SCIM
    error body on a 404."""

    def get(self, request: HttpRequest, uuid: str | None = None, *args: Any, **kw: Any):
        types = self.type_dict_by_type_id(request)
        if uuid:
            return _single(types.get(uuid), uuid)
        return _list_response(sorted(types.values(), key=lambda d: d["id"]))


class SchemasView(scim_views.SchemasView):
    """As :class:`ResourceTypesView`, for the schemas."""

    def get(self, request: HttpRequest, uuid: str | None = None, *args: Any, **kw: Any):
        if uuid:
            return _single(self.schemas_by_uri.get(uuid), uuid)
        return _list_response(sorted(self.schemas_by_uri.values(), key=lambda d: d["id"]))


class UnknownView(scim_views.SCIMView):
    """Any other path under the SCIM root: a SCIM 404, not an HTML page."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raise exceptions.NotFoundError(request.path[:200])

    post = put = patch = delete = get


class NotImplementedView(scim_views.SCIMView):
    """Root search, /Me and /Bulk: a 501 with a SCIM error body."""

    implemented = False

    def status_501(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        error = exceptions.NotImplementedError("Not supported by this server.")
        return HttpResponse(
            json.dumps(error.to_dict()), status=501, content_type=constants.SCIM_CONTENT_TYPE
        )
