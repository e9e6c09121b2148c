"""Who is making configuration changes right now: a context variable, not a thread-local,
so it follows the request through Django's sync/async adapters.

Two ways to set it: ``ChangeContextMiddleware`` for admin and API requests (the actor is
resolved when a change is recorded, because the management API authenticates inside the
view, after every middleware has run), and ``changes_by(actor)`` for management commands
and background jobs. Nothing set: the actor is "system".

Each change also records the role behind it (``Actor.role``): a token's role at its level,
the name of a tool (``"odock_apply"``, ``"portal"``, a SCIM token's), or — for a person —
their roles at the changed object's level, read when the change is recorded
(:func:`role_at`), since one person may be a team admin here and an auditor there.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from django.http import HttpRequest

SYSTEM = "system"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    user_id: int | None = None
    # None: a person's roles, read at the changed object's level when it is recorded.
    role: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeContext:
    actor: Actor | None = None  # fixed by changes_by
    request: HttpRequest | None = None  # resolved at record time (request.auth, .user)
    request_id: str = ""
    client_ip: str | None = None

    def resolve_actor(self) -> Actor:
        if self.actor is not None:
            return self.actor
        if self.request is not None:
            return actor_for_request(self.request)
        return Actor(SYSTEM)


_current: ContextVar[ChangeContext | None] = ContextVar("odock_change_context", default=None)


def change_context() -> ChangeContext:
    return _current.get() or ChangeContext()


def actor_of(value: Any, role: str | None = None) -> Actor:
    """An ``Actor`` from a name ("odock_apply", "api token ci"), a user, or an Actor. A
    name is its own role unless ``role`` says otherwise; a user's role is read per change
    unless given (e.g. "portal")."""
    if isinstance(value, Actor):
        return value if role is None else replace(value, role=role)
    if isinstance(value, str):
        name = value or SYSTEM
        return Actor(name, role=name if role is None else role)
    if getattr(value, "is_authenticated", False):
        return Actor(value.get_username(), value.pk, role=role)
    raise TypeError(f"not an actor: {value!r}")


def actor_for_request(request: HttpRequest) -> Actor:
    """The management API's admin token (set by ninja as ``request.auth``) wins over the
    session user; an anonymous request changes things as "system"."""
    from apps.api.models import AdminToken

    token = getattr(request, "auth", None)
    if isinstance(token, AdminToken):
        return Actor(f"api token {token.name}", role=f"{token.role} of {token.level}")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Actor(user.get_username(), user.pk)
    return Actor(SYSTEM, role=SYSTEM)


def role_at(
    user_id: int | None,
    *,
    organization_id: int | None,
    team_id: int | None = None,
    project_id: int | None = None,
) -> str:
    """A person's roles that cover the object at (organisation, team, project), e.g.
    ``"team_admin of team:acme/search"``; several joined by "; ". A superuser without a
    platform membership is the break-glass account. Empty when nothing covers it."""
    if user_id is None:
        return ""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    from apps.identity.models import Membership, Role

    covering = Q(role=Role.PLATFORM_ADMIN)
    if organization_id is not None:
        covering |= Q(organization_id=organization_id)
    if team_id is not None:
        covering |= Q(team_id=team_id)
    if project_id is not None:
        covering |= Q(project_id=project_id)
    memberships = Membership.objects.filter(covering, user_id=user_id).select_related(
        "organization", "team__organization", "project__team__organization"
    )
    roles = sorted(
        f"{m.role} of {m.level}" if m.role != Role.PLATFORM_ADMIN else m.role for m in memberships
    )
    platform = any(r == Role.PLATFORM_ADMIN for r in roles)
    if not platform and get_user_model().objects.filter(pk=user_id, is_superuser=True).exists():
        roles.insert(0, "platform_admin (superuser)")
    return "; ".join(roles)


def request_id_for(request: HttpRequest) -> str:
    """The caller's X-Request-ID when it is a plain token (it is stored and echoed), else
    a fresh one."""
    given = request.headers.get("X-Request-ID", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def client_ip_for(request: HttpRequest) -> str | None:
    """The peer address only: X-Forwarded-For is whatever the client wants it to be."""
    return request.META.get("REMOTE_ADDR") or None


@contextmanager
def request_changes(request: HttpRequest) -> Iterator[ChangeContext]:
    context = ChangeContext(
        request=request, request_id=request_id_for(request), client_ip=client_ip_for(request)
    )
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@contextmanager
def changes_by(actor: Any, *, role: str | None = None) -> Iterator[ChangeContext]:
    """Record every change inside the block as made by ``actor``: a name such as
    ``"odock_apply"`` (its own role unless ``role`` is given: ``changes_by("scim token x",
    role="scim token x (acme)")``), or a user (their roles at each object's level unless
    ``role`` is given, e.g. ``"portal"``). A surrounding request's id and address are
    kept."""
    context = replace(change_context(), actor=actor_of(actor, role), request=None)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
