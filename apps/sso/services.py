"""What single sign-on does, as plain functions the views and the backend call.

Every way a sign-in can be refused raises :class:`SsoRefused` with a short machine reason
(recorded in :class:`~apps.sso.models.SignInEvent`) and a sentence shown to the person.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from apps.identity.models import Membership, MembershipSource, Role
from apps.identity.roles import ADMIN_ROLES
from apps.identity.scope import forget_scope
from apps.sso.models import (
    GroupMapping,
    OidcProvider,
    SignInEvent,
    SsoIdentity,
)


class SsoRefused(Exception):
    """A sign-in refused: ``reason`` is recorded, ``message`` is shown."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def timeout_seconds() -> float:
    """Every call to a provider (discovery, token, userinfo, JWKS) waits at most this."""
    return float(getattr(settings, "ODOCK_SSO_TIMEOUT_SECONDS", 5))


# --- discovery -------------------------------------------------------------------------

_DISCOVERY_TTL = 300.0
_discovery_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_discovery_lock = threading.Lock()


def _same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def discovery_get(issuer: str) -> dict[str, Any]:
    """The provider's metadata (cached for five minutes), checked to name ``issuer``."""
    now = time.monotonic()
    with _discovery_lock:
        hit = _discovery_cache.get(issuer)
    if hit and now - hit[0] < _DISCOVERY_TTL:
        return hit[1]
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=timeout_seconds())
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SsoRefused(
            "provider_unreachable", "The identity provider did not answer; try again later."
        ) from exc
    if not isinstance(metadata, dict) or not _same_issuer(str(metadata.get("issuer")), issuer):
        raise SsoRefused(
            "issuer_mismatch",
            "The identity provider's metadata names another issuer than the one configured.",
        )
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(metadata.get(field), str):
            raise SsoRefused("bad_discovery", f"The identity provider's metadata lacks {field}.")
    with _discovery_lock:
        _discovery_cache[issuer] = (now, metadata)
    return metadata


def discovery_forget() -> None:
    with _discovery_lock:
        _discovery_cache.clear()


# --- the ID token ----------------------------------------------------------------------


def _signing_key(jwks_uri: str, token: str) -> jwt.PyJWK:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise SsoRefused("bad_token", "The identity provider sent an unreadable ID token.") from exc
    try:
        response = requests.get(jwks_uri, timeout=timeout_seconds())
        response.raise_for_status()
        keys = response.json()["keys"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise SsoRefused(
            "provider_unreachable", "The identity provider's signing keys could not be read."
        ) from exc
    for key in keys:
        if header.get("kid") is not None and key.get("kid") != header.get("kid"):
            continue
        if "alg" in key and key["alg"] != header.get("alg"):
            continue
        try:
            return jwt.PyJWK(key)
        except jwt.PyJWTError:
            continue
    raise SsoRefused(
        "bad_signature", "The ID token is signed with a key the provider does not publish."
    )


#: Asymmetric algorithms only: "none" and HS* (a key the client also holds) are refused.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


def id_token_verify(
    provider: OidcProvider, token: str, *, nonce: str | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    """The ID token's claims, once its signature (the provider's JWKS), issuer, audience,
    expiry and nonce are all right."""
    if not token:
        raise SsoRefused("bad_token", "The identity provider sent no ID token.")
    key = _signing_key(metadata["jwks_uri"], token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=provider.client_id,
            issuer=metadata["issuer"],
            leeway=60,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.InvalidAudienceError as exc:
        raise SsoRefused("wrong_audience", "The ID token was issued for another client.") from exc
    except jwt.InvalidIssuerError as exc:
        raise SsoRefused("wrong_issuer", "The ID token was issued by another provider.") from exc
    except jwt.InvalidSignatureError as exc:
        raise SsoRefused("bad_signature", "The ID token's signature is not valid.") from exc
    except jwt.ExpiredSignatureError as exc:
        raise SsoRefused("expired_token", "The ID token has expired.") from exc
    except jwt.PyJWTError as exc:
        raise SsoRefused("bad_token", "The ID token is not valid.") from exc
    if not _same_issuer(metadata["issuer"], provider.issuer):
        raise SsoRefused("wrong_issuer", "The ID token was issued by another provider.")
    if claims.get("nonce") != nonce:
        raise SsoRefused("bad_nonce", "The ID token does not answer this sign-in (nonce).")
    return claims


# --- mapping and provisioning ----------------------------------------------------------

Grant = tuple[str, int | None, int | None, int | None]  # role, org, team, project


def groups_of(provider: OidcProvider, claims: dict[str, Any]) -> list[str]:
    value = claims.get(provider.groups_claim)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def grants_for_groups(provider: OidcProvider, groups: list[str]) -> list[Grant]:
    """The memberships the claim mapping gives for ``groups`` (distinct, in mapping order)."""
    grants: list[Grant] = []
    rows = GroupMapping.objects.filter(provider=provider, group__in=groups).select_related(
        "project__team"
    )
    for row in rows:
        if row.role == Role.PLATFORM_ADMIN:  # never granted by SSO (see models)
            continue
        if row.project_id is not None:
            grant: Grant = (row.role, None, None, row.project_id)
        elif row.team_id is not None:
            grant = (row.role, None, row.team_id, None)
        else:
            grant = (row.role, provider.organization_id, None, None)
        if grant not in grants:
            grants.append(grant)
    return grants


def _in_org(provider: OidcProvider) -> Q:
    """Memberships at the provider's organisation or anywhere below it."""
    org_id = provider.organization_id
    return (
        Q(organization_id=org_id)
        | Q(team__organization_id=org_id)
        | Q(project__team__organization_id=org_id)
    )


@transaction.atomic
def sso_memberships_replace(*, user: Any, provider: OidcProvider, grants: list[Grant]) -> None:
    """Make the user's SSO memberships in the provider's organisation exactly ``grants``.
    Manual and SCIM memberships, and other organisations', are kept."""
    Membership.objects.filter(user=user, source=MembershipSource.SSO).filter(
        _in_org(provider)
    ).delete()
    for role, org_id, team_id, project_id in grants:
        Membership.objects.get_or_create(
            user=user,
            role=role,
            organization_id=org_id,
            team_id=team_id,
            project_id=project_id,
            defaults={"source": MembershipSource.SSO},
        )
    uses_admin = Membership.objects.filter(user=user, role__in=ADMIN_ROLES).exists()
    if user.is_staff != (uses_admin or user.is_superuser):
        user.is_staff = uses_admin or user.is_superuser
        user.save(update_fields=["is_staff"])
    forget_scope(user)


@dataclass(frozen=True, slots=True)
class Person:
    subject: str
    username: str
    email: str
    groups: list[str]


def person_from_claims(provider: OidcProvider, claims: dict[str, Any]) -> Person:
    """Who the claims describe, refused when the configuration's rules say so."""
    subject = str(claims.get("sub") or "")
    username = str(claims.get(provider.username_claim) or "").strip()
    email = str(claims.get(provider.email_claim) or "").strip()
    if claims.get("email_verified") is False:
        email = ""  # the provider says it is not theirs: never matched against a domain
    if not subject or not username:
        raise SsoRefused(
            "missing_claim",
            f"The identity provider did not send the {provider.username_claim} claim.",
        )
    username_field = get_user_model()._meta.get_field("username")
    try:
        username_field.run_validators(username)
        username_field.clean(username, None)
    except Exception as exc:
        raise SsoRefused("bad_username", "The username the provider sent is not usable.") from exc
    domains = provider.email_domains
    if domains and email.rpartition("@")[2].lower() not in domains:
        raise SsoRefused(
            "email_domain_not_allowed", "Your email address is not in a domain allowed here."
        )
    return Person(subject, username, email, groups_of(provider, claims))


def sso_user_sign_in(*, provider: OidcProvider, claims: dict[str, Any]) -> Any:
    """The user for these verified claims, created on first sign-in, with their SSO
    memberships in the organisation replaced by what the mapping gives for their groups.

    Refused when the groups map to nothing: a known person then also loses the SSO
    memberships they had there (they left the groups); a new one is not created."""
    person = person_from_claims(provider, claims)
    User = get_user_model()
    with transaction.atomic():
        identity = (
            SsoIdentity.objects.select_for_update()
            .select_related("user")
            .filter(provider=provider, subject=person.subject)
            .first()
        )
        grants = grants_for_groups(provider, person.groups)
        if identity is None:
            if User.objects.filter(username=person.username).exists():
                raise SsoRefused(
                    "username_taken",
                    f"An account named {person.username} already exists and is not linked "
                    "to this identity provider; ask an administrator.",
                )
            if not grants:
                raise _unmapped()
            user = User(username=person.username, email=person.email)
            user.set_unusable_password()
            user.save()
            identity = SsoIdentity.objects.create(
                provider=provider, subject=person.subject, user=user
            )
        else:
            user = identity.user
            if not user.is_active:
                raise SsoRefused("inactive_user", "Your account is deactivated.")
            if person.email and user.email != person.email:
                user.email = person.email
                user.save(update_fields=["email"])
        sso_memberships_replace(user=user, provider=provider, grants=grants)
        identity.last_login_at = timezone.now()
        identity.save(update_fields=["last_login_at"])
    if not grants:
        raise _unmapped()  # after the commit: the removed memberships stay removed
    return user


def _unmapped() -> SsoRefused:
    return SsoRefused("unmapped_groups", "None of your groups gives a role in this organisation.")


def landing_url(user: Any) -> str:
    """Where a person goes after signing in: the admin for an administrative role, else
    the portal."""
    from apps.identity.scope import scope_for

    return "/admin/" if scope_for(user).uses_admin else "/portal/"


# --- the sign-in record ----------------------------------------------------------------


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer address only: X-Forwarded-For is whatever the client wants it to be."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def sign_in_record(
    *,
    request: HttpRequest | None,
    method: str,
    outcome: str,
    username: str = "",
    user: Any = None,
    organization_id: int | None = None,
    reason: str = "",
) -> SignInEvent:
    return SignInEvent.objects.create(
        at=timezone.now(),
        username=(username or (user.get_username() if user is not None else ""))[:255],
        user=user if user is not None and user.pk else None,
        organization_id=organization_id,
        method=method,
        outcome=outcome,
        reason=reason[:255],
        client_ip=client_ip(request),
    )
