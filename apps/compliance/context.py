"""Who is making configuration changes right now: a context variable, not a thread-local,
so it follows the request through Django's sync/async adapters.

Two ways to set it: ``ChangeContextMiddleware`` for admin and API requests (the actor is
resolved when a change is recorded, because the management API authenticates inside the
view, after every middleware has run), and ``changes_by(actor)`` for management commands
and background jobs. Nothing set: the actor is "system".
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


def actor_of(value: Any) -> Actor:
    """An ``Actor`` from a name ("odock_apply", "api token ci"), a user, or an Actor."""
    if isinstance(value, Actor):
        return value
    if isinstance(value, str):
        return Actor(value or SYSTEM)
    if getattr(value, "is_authenticated", False):
        return Actor(value.get_username(), value.pk)
    raise TypeError(f"not an actor: {value!r}")


def actor_for_request(request: HttpRequest) -> Actor:
    """The management API's admin token (set by ninja as ``request.auth``) wins over the
    session user; an anonymous request changes things as "system"."""
    from apps.api.models import AdminToken

    token = getattr(request, "auth", None)
    if isinstance(token, AdminToken):
        return Actor(f"api token {token.name}")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Actor(user.get_username(), user.pk)
    return Actor(SYSTEM)


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
def changes_by(actor: Any) -> Iterator[ChangeContext]:
    """Record every change inside the block as made by ``actor``: a name such as
    ``"odock_apply"``, or a user. A surrounding request's id and address are kept."""
    context = replace(change_context(), actor=actor_of(actor), request=None)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
