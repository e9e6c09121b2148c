"""Django's PostgreSQL backend with ``BoundedConnection`` (see the package docstring)."""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base

# psycopg's own deadline error, raised by ``Connection.wait(timeout=…)`` (psycopg 3.3).
from psycopg.errors import _WaitTimeout

from apps.core.postgres import thread_wait_limit

# Other threads: the server's statement timeout normally fires first and leaves the
# connection usable; the client-side deadline is for a server that cannot say so.
DEFAULT_LIMIT_MARGIN_SECONDS = 5.0


class BoundedConnection(psycopg.Connection):
    """Every wait for the server (a statement, a commit, a COPY …) has a deadline."""

    default_limit: float | None = None

    def wait(self, gen: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        if timeout is not None:  # psycopg's own deadline (notifications, cancellation)
            return super().wait(gen, *args, timeout=timeout, **kwargs)
        limit = thread_wait_limit() or self.default_limit
        if limit is None:
            return super().wait(gen, *args, **kwargs)
        try:
            return super().wait(gen, *args, timeout=limit, **kwargs)
        except _WaitTimeout:
            # The answer may still come later: the connection's state is unknown, so it is
            # closed, never reused.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the database did not answer within {limit:g} s; connection closed"
            ) from None


class _Psycopg:
    """psycopg as Django's backend sees it (``DatabaseWrapper.Database``), except that
    ``connect`` makes ``BoundedConnection``s."""

    connect = BoundedConnection.connect

    def __getattr__(self, name: str) -> Any:
        return getattr(psycopg, name)


class DatabaseWrapper(base.DatabaseWrapper):
    Database = _Psycopg()

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        limit = thread_wait_limit()
        if limit:  # a gateway thread: the server gives up on its statements as soon
            options = params.get("options", "")
            params["options"] = f"{options} -c statement_timeout={int(limit * 1000)}".strip()
        return params

    def set_autocommit(
        self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False
    ) -> None:
        """Leaving ``atomic()`` after the connection was dropped (a failed rollback), Django
        opens a new one only to switch autocommit back on — against a stalled server, a
        whole connect timeout spent for nothing. A new connection starts in autocommit
        anyway (``connect()`` sets it), so there is nothing to do without one."""
        if autocommit and self.connection is None:
            return
        super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)

    def get_new_connection(self, conn_params: dict[str, Any]) -> BoundedConnection:
        connection = super().get_new_connection(conn_params)
        statement_timeout = settings.ODOCK_DB_STATEMENT_TIMEOUT_SECONDS
        if statement_timeout > 0:
            connection.default_limit = statement_timeout + DEFAULT_LIMIT_MARGIN_SECONDS
        return connection
