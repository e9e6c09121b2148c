"""uvicorn's httptools protocol with the limits on slow and greedy clients it lacks.

Run the gateway with ``uvicorn odock.asgi:application --http odock.server:HttpProtocol …``.
uvicorn bounds an idle keep-alive connection, but not a client that never finishes its
headers (a connection with no bytes at all, or half a header block, stayed open for good)
nor one that sends less body than its ``Content-Length`` said; and one address could hold
any number of connections. Per process (one event loop, so plain counters):

- ``ODOCK_HEADER_TIMEOUT_SECONDS`` (10): from a connection's first moment, or a request's
  first byte, to the end of its headers. Then ``408`` and the connection is closed.
- ``ODOCK_BODY_TIMEOUT_SECONDS`` (30): from the end of the headers to the end of the body.
  Then ``408`` (if no answer has started) and the connection is closed; the application
  sees the client leave (the gateway records the request as ``request_body_incomplete``).
- ``ODOCK_MAX_CONNECTIONS_PER_CLIENT`` (256; 0 = no cap): open connections from one
  address; more are closed at once. Behind a reverse proxy every connection comes from the
  proxy's address: raise it there (and cap per client at the proxy).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("odock.server")


def _seconds(name: str, default: float) -> float:
    value = float(os.environ.get(name) or default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return value


_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class _HeadWithBody:
    """A response cycle's transport: its first write (the status line and headers) waits
    for the next one (the body) until the end of this turn of the event loop, so an
    ordinary response leaves in one ``write`` — one segment and one wake-up of the client
    instead of two. uvicorn writes the header block on ``http.response.start`` at once; at
    concurrency 1 each socket write cost ~3 % of the gateway's CPU (issue 17). A stream's
    headers, with no body in the same turn, go out at the end of it."""

    __slots__ = ("_held", "_first", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self._flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            if len(data) < 65536:
                data = held + data
            else:
                self._transport.write(held)
        self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _timeout_response(what: str) -> bytes:
    body = (
        b'{"error":{"message":"The request %s did not arrive in time.",'
        b'"type":"invalid_request_error","code":"request_timeout","param":null}}' % what.encode()
    )
    return _REQUEST_TIMEOUT % (len(body), body)


class HttpProtocol(HttpToolsProtocol):
    header_timeout: float = _seconds("ODOCK_HEADER_TIMEOUT_SECONDS", 10.0)
    body_timeout: float = _seconds("ODOCK_BODY_TIMEOUT_SECONDS", 30.0)
    max_connections_per_client: int = int(os.environ.get("ODOCK_MAX_CONNECTIONS_PER_CLIENT") or 256)

    # Open connections per client address, in this process.
    open_per_client: Counter[str] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._address = ""
        self._reading_body = False

    # --- connections ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        self.open_per_client[self._address] += 1
        cap = self.max_connections_per_client
        if cap and self.open_per_client[self._address] > cap:
            log.warning("connection from %s refused: %d already open", self._address, cap)
            transport.abort()
            return
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        count = self.open_per_client[self._address] - 1
        if count > 0:
            self.open_per_client[self._address] = count
        else:
            self.open_per_client.pop(self._address, None)
        super().connection_lost(exc)

    # --- requests ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # A new request on a kept-alive connection: its headers are on the clock.
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self.header_timeout, "headers")
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            self.cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
        if not self.parser.should_upgrade():
            self._reading_body = True
            self._arm(self.body_timeout, "body")

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._disarm()
        super().on_message_complete()

    # --- the clock -----------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        answered = self.cycle is not None and self.cycle.response_started
        if what == "body" and (not self._reading_body or answered):
            return  # the body arrived, or the application already answered without it
        log.info("closing a connection from %s: request %s too slow", self._address, what)
        self.transport.write(_timeout_response(what))
        self.transport.close()
