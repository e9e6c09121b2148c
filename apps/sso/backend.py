"""mozilla-django-oidc's backend, with its settings taken from the organisation's
:class:`~apps.sso.models.OidcProvider` instead of Django settings (one provider per
organisation), and a stricter ID token check (issuer and audience too: the library leaves
audience unchecked)."""

from __future__ import annotations

from typing import Any

import requests
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.sso.models import OidcProvider
from apps.sso.services import (
    SsoRefused,
    discovery_get,
    id_token_verify,
    sso_user_sign_in,
    timeout_seconds,
)


class OrganisationOidcBackend(OIDCAuthenticationBackend):
    """Signs in only when called with ``sso_provider`` (by :mod:`apps.sso.views`); any
    other ``authenticate`` call (a password form) passes to the next backend."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library reads global OIDC_* settings here; ours are per provider.
        self.UserModel = get_user_model()

    def get_settings(self, attr: str, *args: Any) -> Any:  # type: ignore[override]
        values = {
            "OIDC_TIMEOUT": timeout_seconds(),
            "OIDC_VERIFY_SSL": True,
            "OIDC_PROXY": None,
            "OIDC_TOKEN_USE_BASIC_AUTH": False,
            "OIDC_AUTHENTICATION_CALLBACK_URL": "sso:callback",
            "OIDC_STORE_ACCESS_TOKEN": False,
            "OIDC_STORE_ID_TOKEN": False,
        }
        if attr in values:
            return values[attr]
        return super().get_settings(attr, *args)

    def verify_token(self, token: str, **kwargs: Any) -> Any:
        # The library calls this only for a userinfo answer sent as a JWT; the ID token is
        # checked by apps.sso.services.id_token_verify.
        raise SsoRefused(
            "unsupported_userinfo",
            "The identity provider sends signed userinfo; configure it to send JSON.",
        )

    def authenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        sso_provider: OidcProvider | None = None,
        nonce: str | None = None,
        code_verifier: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is None or sso_provider is None:
            return None
        provider = sso_provider
        metadata = discovery_get(provider.issuer)
        self.request = request
        self.OIDC_OP_TOKEN_ENDPOINT = metadata["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = metadata.get("userinfo_endpoint")
        self.OIDC_RP_CLIENT_ID = provider.client_id
        self.OIDC_RP_CLIENT_SECRET = provider.client_secret or ""
        code = request.GET.get("code")
        if not code:
            raise SsoRefused("missing_code", "The identity provider sent no authorization code.")
        from django.urls import reverse

        payload = {
            "client_id": provider.client_id,
            "client_secret": provider.client_secret or "",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": request.build_absolute_uri(reverse("sso:callback")),
        }
        if code_verifier is not None:
            payload["code_verifier"] = code_verifier
        try:
            tokens = self.get_token(payload)
        except (requests.RequestException, ValueError) as exc:
            raise SsoRefused(
                "token_exchange_failed", "The identity provider refused the sign-in code."
            ) from exc
        claims = id_token_verify(
            provider, tokens.get("id_token") or "", nonce=nonce, metadata=metadata
        )
        if self.OIDC_OP_USER_ENDPOINT and tokens.get("access_token"):
            try:
                userinfo = self.get_userinfo(tokens["access_token"], tokens.get("id_token"), claims)
            except (requests.RequestException, ValueError) as exc:
                raise SsoRefused(
                    "provider_unreachable", "The identity provider's userinfo did not answer."
                ) from exc
            if not isinstance(userinfo, dict) or userinfo.get("sub") != claims["sub"]:
                raise SsoRefused("bad_userinfo", "The provider's userinfo names another person.")
            claims = {**claims, **userinfo}
        request.sso_claims_username = str(claims.get(provider.username_claim) or "")  # type: ignore[attr-defined]
        return sso_user_sign_in(provider=provider, claims=claims)
