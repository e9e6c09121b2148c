"""Bearer authentication for the management API with admin tokens."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from apps.api.models import AdminToken
from apps.api.services import admin_token_authenticate


class AdminTokenAuth(HttpBearer):
    """``Authorization: Bearer odk-admin-…``. Views get the token as ``request.auth`` and
    scope every read and write by its organisation."""

    def __call__(self, request: HttpRequest) -> AdminToken | None:
        # Overrides ninja's parsing, which logs the whole header under DEBUG when the
        # scheme is wrong: a secret must never reach a log.
        scheme, _, secret = request.headers.get(self.header, "").partition(" ")
        if scheme.lower() != self.openapi_scheme or not secret.strip():
            return None
        return self.authenticate(request, secret.strip())

    def authenticate(self, request: HttpRequest, token: str) -> AdminToken | None:
        return admin_token_authenticate(secret=token)
