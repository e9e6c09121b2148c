"""Agent sessions of ``/mcp`` (per gateway process; a load balancer keeps a session sticky
by its ``Mcp-Session-Id``).

A session remembers what the agent declared (capabilities, log level), what it subscribed
to, the requests the gateway relayed to it and awaits answers for (sampling, elicitation),
and a bounded outbox that its standalone GET stream drains (list changes, resource updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from apps.gateway.snapshot import Identity

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
OUTBOX_LIMIT = 1000  # notifications kept for a GET stream; more are dropped (they are hints)


@dataclass(slots=True, eq=False)
class Session:
    id: str
    key_id: int
    identity: Identity
    protocol_version: str
    last_seen: float
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    initialized: bool = False
    log_level: str | None = None  # None: every level (the agent never asked)
    subscriptions: set[tuple[str, str]] = field(default_factory=set)  # (server, uri)
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    outbox: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT)
    )
    streaming: bool = False  # a GET stream is open
    _next_id: int = 0

    def wants_log(self, level: str) -> bool:
        if self.log_level is None:
            return True
        try:
            return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.log_level)
        except ValueError:
            return True

    def supports(self, capability: str) -> bool:
        return capability in self.client_capabilities

    def new_request_id(self) -> str:
        self._next_id += 1
        return f"odock-{self._next_id}"

    def push(self, notification: dict[str, Any]) -> None:
        """For the GET stream, if one is open (notifications are hints: none is kept for
        a stream that is not there)."""
        if self.streaming:
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait(notification)

    def close(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.cancel()
        self.pending.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)  # ends an open GET stream


class SessionStore:
    def __init__(self, *, idle_seconds: float, max_sessions: int) -> None:
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}

    def create(
        self, identity: Identity, version: str, capabilities: dict[str, Any]
    ) -> tuple[Session, list[Session]]:
        """The new session, and the sessions dropped to make room (idle ones, then the
        oldest) so the caller can release what they held."""
        dropped = self.expire()
        while len(self.sessions) >= self.max_sessions:
            dropped.append(self.sessions.pop(next(iter(self.sessions))))
        session = Session(
            id=secrets.token_urlsafe(24),
            key_id=identity.key_id,
            identity=identity,
            protocol_version=version,
            last_seen=time.monotonic(),
            client_capabilities=capabilities,
        )
        self.sessions[session.id] = session
        for gone in dropped:
            gone.close()
        return session, dropped

    def expire(self) -> list[Session]:
        now = time.monotonic()
        idle = [
            s
            for s in self.sessions.values()
            if now - s.last_seen > self.idle_seconds and not s.streaming and not s.pending
        ]
        for session in idle:
            del self.sessions[session.id]
        return idle

    def get(self, session_id: str, key_id: int) -> Session | None:
        """The session if this key opened it (another key's session does not exist)."""
        session = self.sessions.get(session_id)
        if session is None or session.key_id != key_id:
            return None
        return session

    def remove(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        session.close()

    def __iter__(self) -> Any:
        return iter(list(self.sessions.values()))

    def __len__(self) -> int:
        return len(self.sessions)
