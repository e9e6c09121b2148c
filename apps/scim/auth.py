"""Bearer authentication for SCIM: ``Authorization: Bearer odk-scim-…``.

django-scim2 wraps every SCIM view's dispatch in this check. A session login is never
enough: only a live SCIM token (not revoked, not expired) opens the API, and the token
decides the organisation.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django_scim import constants
from django_scim.middleware import SCIMAuthCheckMiddleware

from apps.scim.tokens import scim_token_authenticate

WWW_AUTHENTICATE = 'Bearer realm="odock-scim"'


def unauthorized() -> HttpResponse:
    body = {
        "schemas": [constants.SchemaURI.ERROR],
        "status": "401",
        "detail": "A live SCIM token is required: Authorization: Bearer odk-scim-…",
    }
    response = HttpResponse(json.dumps(body), status=401, content_type=constants.SCIM_CONTENT_TYPE)
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


class ScimTokenAuth(SCIMAuthCheckMiddleware):
    def should_log_request(self, request: HttpRequest) -> bool:
        return False  # bodies carry personal data and, once, a password attribute

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        token = None
        if scheme.lower() == "bearer" and secret.strip():
            token = scim_token_authenticate(secret=secret.strip())
        if token is None:
            return unauthorized()
        request.scim_token = token  # type: ignore[attr-defined]
        return None

    def process_response(self, request: HttpRequest, response: Any) -> Any:
        return response
