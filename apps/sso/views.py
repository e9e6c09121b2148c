"""The SSO pages: where a sign-in starts (``/sso/``: by organisation or email domain;
``/sso/<org>/login/``), and the callback the provider returns to. Thin: the protocol is
mozilla-django-oidc's (state, nonce, PKCE), the rules are :mod:`apps.sso.services`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.contrib import auth
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from mozilla_django_oidc.views import OIDCAuthenticationRequestView

from apps.sso.models import OidcProvider, SignInMethod, SignInOutcome
from apps.sso.services import SsoRefused, discovery_get, landing_url, sign_in_record

PENDING = "sso_states"  # session: state → provider id, for the callback


def _safe_next(request: HttpRequest, value: str | None) -> str | None:
    if value and url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return value
    return None


def refused(
    request: HttpRequest,
    refusal: SsoRefused,
    *,
    provider: OidcProvider | None = None,
    username: str = "",
    status: int = 403,
) -> HttpResponse:
    """Record the failed sign-in and tell the person why, without any protocol detail."""
    sign_in_record(
        request=request,
        method=SignInMethod.SSO,
        outcome=SignInOutcome.FAILURE,
        username=username,
        organization_id=provider.organization_id if provider else None,
        reason=refusal.reason,
    )
    context = {"message": refusal.message, "reason": refusal.reason, "provider": provider}
    return render(request, "sso/refused.html", context, status=status)


def provider_find(text: str) -> OidcProvider | None:
    """The enabled provider for an organisation name or an email address (its domain)."""
    text = text.strip()
    if "@" in text:
        domain = text.rpartition("@")[2].lower()
        for provider in OidcProvider.objects.filter(enabled=True).select_related("organization"):
            if domain in provider.email_domains:
                return provider
        return None
    return (
        OidcProvider.objects.filter(enabled=True, organization__name=text.lower())
        .select_related("organization")
        .first()
    )


def start(request: HttpRequest) -> HttpResponse:
    """``/sso/?q=acme`` or ``?q=ana@acme.example``: on to that organisation's provider."""
    query = request.GET.get("q", "").strip()
    next_url = _safe_next(request, request.GET.get("next"))
    error = ""
    if query:
        provider = provider_find(query)
        if provider is not None:
            url = reverse("sso:login", args=[provider.organization.name])
            if next_url:
                url += "?" + urlencode({"next": next_url})
            return HttpResponseRedirect(url)
        error = "No organisation signs in with single sign-on under that name or email domain."
    return render(
        request,
        "sso/start.html",
        {"q": query, "next": next_url or "", "error": error},
        status=404 if error else 200,
    )


class LoginView(OIDCAuthenticationRequestView):
    """Starts the authorization code flow (PKCE, state, nonce) at the org's provider."""

    def __init__(self, **kwargs: Any) -> None:
        # The library reads global OIDC_* settings here; ours come from the organisation.
        self.provider: OidcProvider | None = None

    def get_settings(self, attr: str, *args: Any) -> Any:  # type: ignore[override]
        assert self.provider is not None
        values = {
            "OIDC_RP_SCOPES": self.provider.scopes,
            "OIDC_USE_PKCE": True,
            "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
            "OIDC_USE_NONCE": True,
            "OIDC_AUTHENTICATION_CALLBACK_URL": "sso:callback",
            "OIDC_REDIRECT_FIELD_NAME": "next",
            "OIDC_AUTH_REQUEST_EXTRA_PARAMS": {},
        }
        if attr in values:
            return values[attr]
        return super().get_settings(attr, *args)

    def get(self, request: HttpRequest, org: str = "") -> HttpResponse:  # type: ignore[override]
        self.provider = (
            OidcProvider.objects.filter(enabled=True, organization__name=org)
            .select_related("organization")
            .first()
        )
        if self.provider is None:
            return render(
                request,
                "sso/start.html",
                {"q": org, "next": "", "error": "This organisation has no single sign-on."},
                status=404,
            )
        try:
            metadata = discovery_get(self.provider.issuer)
        except SsoRefused as refusal:
            return refused(request, refusal, provider=self.provider, status=502)
        self.OIDC_OP_AUTH_ENDPOINT = metadata["authorization_endpoint"]
        self.OIDC_RP_CLIENT_ID = self.provider.client_id
        response = super().get(request)
        state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
        pending = request.session.get(PENDING)
        pending = pending if isinstance(pending, dict) else {}
        # Kept as small as the library keeps its own states (it drops the oldest past 50).
        pending = {s: p for s, p in pending.items() if s in request.session["oidc_states"]}
        pending[state] = self.provider.pk
        request.session[PENDING] = pending
        return response


def callback(request: HttpRequest) -> HttpResponse:
    """The provider's answer: check the state against this browser's session, then let the
    backend exchange the code and verify the ID token; sign in or refuse (recorded)."""
    state = request.GET.get("state", "")
    states = request.session.get("oidc_states")
    states = states if isinstance(states, dict) else {}
    pending = request.session.get(PENDING)
    pending = pending if isinstance(pending, dict) else {}
    provider_id = pending.pop(state, None) if state else None
    entry = states.pop(state, None) if state else None
    # One use per state, whatever happens next (no replay).
    request.session["oidc_states"] = states
    request.session[PENDING] = pending
    provider = (
        OidcProvider.objects.filter(pk=provider_id, enabled=True)
        .select_related("organization")
        .first()
        if provider_id is not None
        else None
    )
    if entry is None or provider is None:
        return refused(
            request,
            SsoRefused("bad_state", "This sign-in link is stale or not from this browser."),
            status=400,
        )
    if request.GET.get("error"):
        code = "".join(c for c in request.GET["error"] if c.isalnum() or c == "_")[:40]
        return refused(
            request,
            SsoRefused(f"provider_error:{code}", "The identity provider did not sign you in."),
            provider=provider,
        )
    next_url = _safe_next(request, request.session.get("oidc_login_next"))
    if auth.get_user(request).is_authenticated:
        auth.logout(request)  # a new person signing in in this browser
        request.session["oidc_states"] = states
    request.sso_provider = provider  # type: ignore[attr-defined]  (for the sign-in record)
    try:
        user = auth.authenticate(
            request=request,
            sso_provider=provider,
            nonce=entry.get("nonce"),
            code_verifier=entry.get("code_verifier"),
        )
    except SsoRefused as refusal:
        username = getattr(request, "sso_claims_username", "")
        return refused(request, refusal, provider=provider, username=username)
    if user is None:
        return refused(
            request, SsoRefused("not_signed_in", "The sign-in failed."), provider=provider
        )
    auth.login(request, user)  # the user_logged_in signal records the success
    target = landing_url(user)
    if next_url and (target == "/admin/" or not next_url.startswith("/admin/")):
        target = next_url
    return HttpResponseRedirect(target)
