"""Network helpers for tests: a TCP proxy that can cut a real service, and a webhook sink."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import json
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a real service. ``cut()`` drops every connection and
    refuses new ones (an outage the client sees at once); ``blackhole()`` keeps every
    socket open but silently drops whatever is sent on it, both ways, and accepts new
    connections that go nowhere (a stall: only the client's own timeouts notice);
    ``restore()`` serves new connections again on the same port. A black-holed connection
    stays dead after ``restore()`` (its bytes are gone, as on a real network whose
    retransmissions timed out): the client has to give up on it by itself."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._open: dict[int, tuple[asyncio.StreamWriter, ...]] = {}
        self._ids = itertools.count()
        self._blackholed = False
        self._dead: set[int] = set()  # connections whose bytes are dropped
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _pipe(self, reader, writer, conn: int, *, to_client: bool) -> None:
        try:
            while data := await reader.read(65536):
                if conn in self._dead:
                    continue  # black-holed: read and dropped, never forwarded
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not (to_client and conn in self._dead):  # a stall never closes the client
                writer.close()

    async def _handle(self, reader, writer) -> None:
        conn = next(self._ids)
        try:
            if self._blackholed:  # accepted, then nothing: whatever comes is dropped
                self._dead.add(conn)
                self._open[conn] = (writer,)
                with contextlib.suppress(ConnectionError, OSError):
                    while await reader.read(65536):
                        pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                return
            self._open[conn] = (writer, up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, conn, to_client=False),
                self._pipe(up_reader, writer, conn, to_client=True),
            )
        finally:
            self._open.pop(conn, None)
            self._dead.discard(conn)

    async def _start(self) -> None:
        self._blackholed = False
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writers in list(self._open.values()):
            for w in writers:
                w.transport.abort()
        self._open.clear()

    async def _blackhole(self) -> None:
        self._blackholed = True
        self._dead |= set(self._open)

    def restore(self) -> None:
        self._call(self._start())

    def cut(self) -> None:
        self._call(self._stop())

    def blackhole(self) -> None:
        self._call(self._blackhole())

    async def _shutdown(self) -> None:
        await self._stop()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)


class WebhookSink:
    """A real HTTP server that keeps every POST it receives (body and headers)."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(
                    {
                        "body": body,
                        "json": json.loads(body),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
