"""Every sign-in and every failed one is recorded (issue 15, item 7): Django's own signals
for local passwords and SSO successes; SSO refusals are recorded by :mod:`apps.sso.views`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from apps.sso.models import SignInMethod, SignInOutcome
from apps.sso.services import sign_in_record

SSO_BACKEND = "apps.sso.backend.OrganisationOidcBackend"


@receiver(user_logged_in, dispatch_uid="sso-record-login")
def record_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    sso = getattr(user, "backend", "") == SSO_BACKEND
    provider = getattr(request, "sso_provider", None) if sso else None
    sign_in_record(
        request=request,
        method=SignInMethod.SSO if sso else SignInMethod.LOCAL,
        outcome=SignInOutcome.SUCCESS,
        user=user,
        organization_id=provider.organization_id if provider is not None else None,
    )


@receiver(user_login_failed, dispatch_uid="sso-record-login-failed")
def record_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    if "sso_provider" in credentials:
        return  # recorded by the SSO callback with its reason
    sign_in_record(
        request=request,
        method=SignInMethod.LOCAL,
        outcome=SignInOutcome.FAILURE,
        username=str(credentials.get("username") or ""),
        reason="bad_credentials",
    )
