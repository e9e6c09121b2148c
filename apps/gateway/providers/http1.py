"""A minimal HTTP/1.1 client for upstream POSTs: asyncio protocol, keep-alive pool.

Why not aiohttp here: at concurrency 1 its client was ~18 % of the event loop's CPU
(ClientRequest construction, yarl, multidict, several timers and tracing hooks per
request; bench/RESULTS.md). An upstream call here is always one POST with a known body,
so this module only writes one request head + body and parses one response: status line,
headers, a body framed by Content-Length, chunked encoding or the connection's close;
gzip/deflate decoded. Redis went the same way (``apps/gateway/redis_client.py``).

Choices, written down:

* Keep-alive pool per (scheme, host, port), at most ``max_connections`` open; idle
  connections are reused last-in first-out and closed after ``keepalive_seconds``.
* A connection the server closed while idle is seen (``connection_lost``) and skipped
  before reuse. The race left (the server closes as we write) is retried ONCE on a fresh
  connection, and only when the failed connection was a reused one and nothing of the
  response had been received: the usual keep-alive race, in which the server read nothing.
* Timeouts as aiohttp's were here: a non-stream call has one total deadline (connect
  included), a stream bounds its connect and each wait for data (head or next chunk).
  Timeouts raise ``TimeoutError``; every other failure (connect, reset, malformed answer,
  bad gzip) raises :class:`UpstreamConnectionError`.
* No proxy support (none was used: no ``trust_env``); no DNS cache (new connections are
  rare under keep-alive; ``getaddrinfo`` runs in the loop's executor, not on the loop).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import zlib
from collections.abc import Mapping
from typing import Any

# What aiohttp sent by default (User-Agent was skipped); a caller's header of the same
# name wins.
_DEFAULTS = (
    ("accept", b"Accept: */*\r\n"),
    ("accept-encoding", b"Accept-Encoding: gzip, deflate\r\n"),
    ("content-type", b"Content-Type: application/octet-stream\r\n"),
)
_MAX_HEAD = 64 * 1024
# A stream's body buffered but not yet read above this pauses the socket.
_HIGH_WATER = 256 * 1024

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _CLOSE, _IDLE = range(8)


class UpstreamConnectionError(Exception):
    """Connecting, writing or reading failed, or the answer was not valid HTTP/1.1."""


class Headers(dict):  # type: ignore[type-arg]
    """Response headers: a case-insensitive mapping (keys stored lower-case); repeated
    headers are joined with ", "."""

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class Response:
    """One exchange's answer: ``status``, ``headers``, then the body through ``read()``
    or ``async for chunk in response`` (decoded, de-chunked bytes as they arrive).
    ``close()`` must be called when done: a body not read to its end closes the
    connection instead of returning it to the pool."""

    __slots__ = (
        "status",
        "headers",
        "_conn",
        "_loop",
        "_chunks",
        "_buffered",
        "_done",
        "_error",
        "_waiter",
        "_decoder",
        "_read_timeout",
        "_wait_started",
        "_timer",
        "_received",
        "_paused",
    )

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self.status = 0
        self.headers: Headers = Headers()
        self._conn: _Connection | None = conn
        self._loop = conn.loop
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        self._read_timeout = read_timeout
        self._wait_started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._received = False
        self._paused = False

    # ---- fed by the connection

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise UpstreamConnectionError(f"cannot decode the body: {exc}") from exc
            if not data:
                return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._read_timeout is not None and self._buffered > _HIGH_WATER and not self._paused:
            conn = self._conn
            if conn is not None and conn.transport is not None:
                self._paused = True
                conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                raise UpstreamConnectionError(f"cannot decode the body: {exc}") from exc
            if tail:
                self._chunks.append(tail)
        if self._paused:  # the connection goes back to the pool: it must read again
            self._paused = False
            conn = self._conn
            if conn is not None and conn.transport is not None:
                conn.transport.resume_reading()
        self._done = True
        self._conn = None
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ---- timeouts

    def _expire(self) -> None:
        """The total deadline passed (non-stream call)."""
        self._timer = None
        if not self._done and self._error is None:
            self._fail(TimeoutError("the upstream did not answer in time"))
            self._abort()

    def _check_read(self) -> None:
        """Streams: fails a wait for data that lasted ``read_timeout``; one timer per
        stream, re-armed lazily rather than one per chunk."""
        self._timer = None
        if self._done or self._error is not None or self._waiter is None:
            return
        assert self._read_timeout is not None
        due = self._wait_started + self._read_timeout
        if self._loop.time() >= due:
            self._fail(TimeoutError("the upstream sent nothing in time"))
            self._abort()
        else:
            self._timer = self._loop.call_at(due, self._check_read)

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    # ---- read by the caller

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        if self._read_timeout is not None:
            self._wait_started = self._loop.time()
            if self._timer is None:
                self._timer = self._loop.call_at(
                    self._wait_started + self._read_timeout, self._check_read
                )
        try:
            await waiter
        finally:
            self._waiter = None

    async def _head(self) -> None:
        while self.status == 0:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The whole body."""
        while not self._done:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        self._chunks = []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        """What arrived since the last call (at least one byte), as one bytes object."""
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks = []
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    conn = self._conn
                    if conn is not None and conn.transport is not None:
                        conn.transport.resume_reading()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    def close(self) -> None:
        """Done with this answer: an unfinished one closes its connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._done:
            self._done = True
            self._abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses the answer to the one request in flight."""

    def __init__(self, host: _Host) -> None:
        self.host = host
        self.loop = host.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.response: Response | None = None
        self.rest = b""  # an incomplete head, chunk size line or CRLF, kept for more
        self.state = _IDLE
        self.remaining = 0
        self.keep_alive = True
        self.idle_since = 0.0

    # ---- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing asked: a broken server; do not reuse
            self.abort()
            return
        response._received = True
        if self.rest:
            data = self.rest + data
            self.rest = b""
        try:
            self._parse(response, data)
        except UpstreamConnectionError as exc:
            response._fail(exc)
            self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.host.forget(self)
        response, self.response = self.response, None
        if response is None:
            return
        if self.state == _CLOSE and exc is None:
            try:
                response._finish()
            except UpstreamConnectionError as error:
                response._fail(error)
            return
        reason = f": {exc}" if exc else ""
        response._fail(UpstreamConnectionError(f"the upstream closed the connection{reason}"))

    # ---- ours

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def start(self, payload: bytes, read_timeout: float | None) -> Response:
        response = Response(self, read_timeout)
        self.response = response
        self.state = _HEAD
        self.keep_alive = True
        self.rest = b""
        assert self.transport is not None
        self.transport.write(payload)
        return response

    def _finish(self, clean: bool) -> None:
        """The answer is complete; ``clean``: no byte followed it."""
        response, self.response = self.response, None
        self.state = _IDLE
        assert response is not None
        response._finish()
        if clean and self.keep_alive and not self.closed:
            self.host.release(self)
        else:
            self.abort()

    def _parse(self, response: Response, data: bytes) -> None:
        """Consumes ``data`` from the current state; keeps an incomplete line in
        ``rest``. Works on offsets into ``data``: slices only for what is handed on."""
        pos, size = 0, len(data)
        while pos < size:
            state = self.state
            if state in (_LENGTH, _CHUNK_DATA):
                n = min(size - pos, self.remaining)
                chunk = data if n == size else data[pos : pos + n]
                pos += n
                self.remaining -= n
                response._feed(chunk)
                if self.remaining == 0:
                    if state == _LENGTH:
                        self._finish(pos == size)
                        return
                    self.state = _CHUNK_CRLF
            elif state == _CHUNK_SIZE:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > _MAX_HEAD:
                        raise UpstreamConnectionError("a chunk size line is too long")
                    break
                line = data[pos:end].split(b";", 1)[0].strip()
                pos = end + 2
                try:
                    chunk_size = int(line, 16)
                except ValueError:
                    chunk_size = -1
                if chunk_size < 0 or not line.isalnum():
                    raise UpstreamConnectionError(f"bad chunk size {line[:20]!r}")
                if chunk_size == 0:
                    self.state = _TRAILER
                else:
                    self.remaining = chunk_size
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_CRLF:
                if size - pos < 2:
                    break
                if not data.startswith(b"\r\n", pos):
                    raise UpstreamConnectionError("a chunk is not followed by CRLF")
                pos += 2
                self.state = _CHUNK_SIZE
            elif state == _HEAD:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    if size - pos > _MAX_HEAD:
                        raise UpstreamConnectionError("the response head is too long")
                    break
                head = data[pos:end]
                pos = end + 4
                self._head(response, head)
                if self.state == _LENGTH and self.remaining == 0:  # no body
                    self._finish(pos == size)
                    return
            elif state == _TRAILER:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > _MAX_HEAD:
                        raise UpstreamConnectionError("the trailers are too long")
                    break
                last = end == pos  # the empty line that ends the trailers
                pos = end + 2
                if last:
                    self._finish(pos == size)
                    return
            elif state == _CLOSE:
                response._feed(data if pos == 0 else data[pos:])
                return
            else:  # bytes after a complete answer: nothing was asked
                raise UpstreamConnectionError("unexpected bytes after the response")
        if pos < size:
            self.rest = data[pos:]

    def _head(self, response: Response, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
            raise UpstreamConnectionError(f"bad status line {lines[0][:40]!r}")
        status = int(rest[:3])
        if 100 <= status < 200:
            return  # 100 Continue and other interim answers: the real one follows
        headers = response.headers
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t":
                raise UpstreamConnectionError(f"bad header line {line[:40]!r}")
            key = name.lower()
            value = value.strip(" \t")
            old = headers.get(key)
            dict.__setitem__(headers, key, value if old is None else f"{old}, {value}")
        connection = headers.get("connection", "").lower()
        if "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
            self.keep_alive = False
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding == "gzip" or encoding == "x-gzip":
            response._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            response._decoder = _Deflate()
        response.status = status
        if status == 204 or status == 304:
            self.remaining = 0
            self.state = _LENGTH
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = _CHUNK_SIZE
        elif "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit():
                raise UpstreamConnectionError(f"bad Content-Length {text[:20]!r}")
            self.remaining = int(text)
            self.state = _LENGTH
        else:
            self.state = _CLOSE
            self.keep_alive = False
        response._wake()


class _Deflate:
    """``Content-Encoding: deflate`` is zlib-wrapped by the standard and raw by some
    servers: the first bytes decide."""

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            raw = len(data) > 0 and (data[0] & 0x0F) != 8
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        return self._inner.flush() if self._inner is not None else b""


class _Host:
    """The connections to one (scheme, host, port)."""

    def __init__(self, pool: HTTP1Pool, scheme: str, host: str, port: int) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.ssl = (pool.ssl_context or _default_context()) if scheme == "https" else None
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.sweeper: asyncio.TimerHandle | None = None

    async def acquire(self, deadline: float | None, fresh: bool) -> tuple[_Connection, bool]:
        """A connection and whether it was reused; new ones within ``deadline``."""
        while True:
            idle = self.idle
            while idle and not fresh:
                conn = idle.pop()
                transport = conn.transport
                if not conn.closed and transport is not None and not transport.is_closing():
                    return conn, True
                conn.abort()
            if self.open < self.pool.max_connections:
                return await self._connect(deadline), False
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()

    async def _connect(self, deadline: float | None) -> _Connection:
        self.open += 1
        conn = _Connection(self)
        try:
            async with asyncio.timeout_at(deadline):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except BaseException as exc:
            if not conn.closed:  # counted once, here or in connection_lost
                conn.closed = True
                self._freed()
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                where = f"{self.host}:{self.port}"
                raise UpstreamConnectionError(f"cannot connect to {where}: {exc}") from exc
            raise
        return conn

    def release(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        self._wake_one()
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.pool.keepalive_seconds, self._sweep)

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed (it may still be in ``idle``; skipped there)."""
        self._freed()

    def _freed(self) -> None:
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive_seconds`` (the oldest are first)."""
        self.sweeper = None
        limit = self.loop.time() - self.pool.keepalive_seconds
        idle = self.idle
        stale = 0
        while stale < len(idle) and (idle[stale].idle_since <= limit or idle[stale].closed):
            stale += 1
        for conn in idle[:stale]:
            conn.abort()
        del idle[:stale]
        if idle:
            self.sweeper = self.loop.call_at(
                idle[0].idle_since + self.pool.keepalive_seconds, self._sweep
            )

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        idle, self.idle = self.idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()


class HTTP1Pool:
    """Keep-alive HTTP/1.1 POSTs; ``ssl_context`` defaults to the verifying one."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_seconds: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_seconds = keepalive_seconds
        self.ssl_context = ssl_context
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        # Per URL: its host and the request line + Host header, built once.
        self._targets: dict[Any, tuple[_Host, bytes]] = {}

    def _target(self, url: Any) -> tuple[_Host, bytes]:
        target = self._targets.get(url)
        if target is None:
            scheme, host, port = url.scheme, url.raw_host, url.port
            if scheme not in ("http", "https") or not host or port is None:
                raise UpstreamConnectionError(f"not an http(s) URL: {url}")
            key = (scheme, host, port)
            pool_host = self._hosts.get(key)
            if pool_host is None:
                pool_host = self._hosts[key] = _Host(self, scheme, host, port)
            name = f"[{host}]" if ":" in host else host
            if port != (443 if scheme == "https" else 80):
                name = f"{name}:{port}"
            path = url.raw_path_qs or "/"
            line = f"POST {path} HTTP/1.1\r\nHost: {name}\r\n".encode("latin-1")
            if len(self._targets) > 10_000:
                self._targets.clear()
            target = self._targets[url] = (pool_host, line)
        return target

    @staticmethod
    def _payload(line: bytes, body: bytes, headers: Mapping[str, str]) -> bytes:
        """Request line, Host, the caller's headers, aiohttp's defaults not given, then
        Content-Length and the body: one bytes object, one write."""
        given = set()
        lines = []
        for name, value in headers.items():
            lower = name.lower()
            if lower == "content-length":
                continue
            if lower == "host":  # the caller's Host (a signed one) replaces ours
                line = line[: line.index(b"\r\n") + 2]
            given.add(lower)
            lines.append(f"{name}: {value}\r\n")
        text = "".join(lines)
        # Each header line has one CR and one LF: any other would split it in two.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise UpstreamConnectionError("a request header contains CR or LF")
        parts = [line, text.encode()]
        for name, default in _DEFAULTS:
            if name not in given:
                parts.append(default)
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        parts.append(body)
        return b"".join(parts)

    async def _open(
        self,
        host: _Host,
        line: bytes,
        body: bytes,
        headers: Mapping[str, str],
        deadline: float | None,
        read_timeout: float | None,
        connect_timeout: float | None = None,
    ) -> Response:
        """Sends the request; returns once the answer's head is in. ``deadline`` bounds
        it all (non-stream), else ``connect_timeout`` a new connection (or a wait for a
        free one) and ``read_timeout`` each wait for data."""
        payload = self._payload(line, body, headers)
        fresh = False
        while True:
            if deadline is None and connect_timeout is not None:
                conn, reused = await host.acquire(host.loop.time() + connect_timeout, fresh)
            else:
                conn, reused = await host.acquire(deadline, fresh)
            response = conn.start(payload, read_timeout)
            if deadline is not None:
                response._timer = host.loop.call_at(deadline, response._expire)
            try:
                await response._head()
            except UpstreamConnectionError:
                response.close()
                if reused and not fresh and not response._received:
                    fresh = True  # the keep-alive race: the server had closed it
                    continue
                raise
            except BaseException:
                response.close()
                raise
            return response

    async def post(
        self, url: Any, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> tuple[int, bytes, Headers]:
        """One POST read to its end within ``timeout`` seconds (connect included)."""
        host, line = self._target(url)
        # host.loop, not get_running_loop(): that is a getpid system call on 3.11.
        response = await self._open(host, line, body, headers, host.loop.time() + timeout, None)
        try:
            data = await response.read()
        finally:
            response.close()
        return response.status, data, response.headers

    async def stream(
        self,
        url: Any,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> Response:
        """A POST whose answer is read as it arrives; the caller must ``close()`` it.
        Connecting is bounded by ``connect_timeout``, each wait for data by
        ``read_timeout``."""
        host, line = self._target(url)
        return await self._open(host, line, body, headers, None, read_timeout, connect_timeout)

    async def close(self) -> None:
        hosts, self._hosts = list(self._hosts.values()), {}
        self._targets = {}
        for host in hosts:
            host.close()


@functools.cache
def _default_context() -> ssl.SSLContext:
    """The verifying context, built once (loading the CA store takes milliseconds)."""
    return ssl.create_default_context()
