"""The upstream HTTP/1.1 client against raw asyncio servers: framing, keep-alive, timeouts,
failures, TLS. Each server below writes its answer byte for byte, so the edge cases are
the ones a real upstream can produce."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
import zlib
from collections.abc import Awaitable, Callable

import pytest
from yarl import URL

from apps.gateway.providers.http1 import HTTP1Pool, UpstreamConnectionError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict], Awaitable[None]]


def run(coro):
    return asyncio.run(coro)


async def read_request(reader: asyncio.StreamReader) -> dict:
    """One request: its head lines and body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return {"line": lines[0], "lines": lines[1:], "headers": headers, "body": body}


class Server:
    """A raw TCP (or TLS) server running ``handler`` per connection; counts connections
    and keeps every request seen."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[dict] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> URL:
        scheme = "https" if self.ssl_context else "http"
        return URL(f"{scheme}://localhost:{self.port}/v1/chat?x=1")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        state = {"server": self}
        try:
            await self.handler(reader, writer, state)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            writer.close()


def keep_alive(answer: bytes) -> Handler:
    """Answers every request on the connection with ``answer``."""

    async def handler(reader, writer, state):
        while True:
            state["server"].requests.append(await read_request(reader))
            writer.write(answer)
            await writer.drain()

    return handler


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def post_twice(server, first: bytes = b"", second: bytes = b"") -> tuple:
    """Two POSTs through one fresh pool (the second may reuse the first's connection)."""
    pool = HTTP1Pool()
    try:
        return (
            await pool.post(server.url, first, {}, timeout=5),
            await pool.post(server.url, second, {}, timeout=5),
        )
    finally:
        await pool.close()


def test_request_head_is_what_aiohttp_sent_minus_nothing_hidden():
    async def go():
        async with Server(keep_alive(OK)) as server:
            pool = HTTP1Pool()
            status, body, headers = await pool.post(
                server.url, b'{"a":1}', {"Authorization": "Bearer k"}, timeout=5
            )
            await pool.close()
            return server, status, body, headers

    server, status, body, headers = run(go())
    assert (status, body) == (200, b"{}")
    request = server.requests[0]
    assert request["line"] == "POST /v1/chat?x=1 HTTP/1.1"
    port = server.url.port
    assert request["lines"] == [
        f"Host: localhost:{port}",
        "Authorization: Bearer k",
        "Accept: */*",
        "Accept-Encoding: gzip, deflate",
        "Content-Type: application/octet-stream",
        "Content-Length: 7",
    ]
    assert request["body"] == b'{"a":1}'


def test_a_header_value_with_a_newline_is_refused_before_sending():
    async def go():
        async with Server(keep_alive(OK)) as server:
            pool = HTTP1Pool()
            try:
                with pytest.raises(UpstreamConnectionError):
                    await pool.post(server.url, b"", {"x-key": "k\r\nX-Evil: 1"}, timeout=5)
                await pool.post(server.url, b"", {"Host": "signed.example"}, timeout=5)
            finally:
                await pool.close()
            return server.requests

    requests = run(go())
    assert len(requests) == 1  # the refused one never left
    assert [x for x in requests[0]["lines"] if x.lower().startswith("host")] == [
        "Host: signed.example"
    ]


def test_headers_are_case_insensitive_and_repeated_ones_joined():
    answer = (
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nX-Request-ID: r1\r\n"
        b"x-dup: a\r\nX-Dup: b\r\nContent-Length: 0\r\n\r\n"
    )

    async def go():
        async with Server(keep_alive(answer)) as server:
            pool = HTTP1Pool()
            result = await pool.post(
                server.url, b"", {"content-type": "application/json"}, timeout=5
            )
            await pool.close()
            return server, result

    server, (status, body, headers) = run(go())
    assert (status, body) == (429, b"")
    assert headers["retry-after"] == headers["Retry-After"] == headers.get("RETRY-AFTER") == "7"
    assert headers.get("x-request-id") == "r1" and "X-Request-Id" in headers
    assert headers["x-dup"] == "a, b"
    assert headers.get("missing") is None
    # The caller's content-type replaces the default one, whatever its case.
    assert [x for x in server.requests[0]["lines"] if x.lower().startswith("content-type")] == [
        "content-type: application/json"
    ]


def test_chunked_body_with_extensions_and_trailers():
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1 ; x\r\n \r\n"
        b"A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def go():
        async with Server(keep_alive(answer)) as server:
            first, second = await post_twice(server)
            return server, first, second

    server, first, second = run(go())
    assert first[1] == second[1] == b"hello 0123456789"
    assert server.connections == 1  # the chunked body was read to its end: reused


def test_every_part_of_an_answer_may_arrive_split():
    """Head, chunk size lines, chunk data, CRLFs and trailers one byte at a time."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    )

    async def handler(reader, writer, state):
        while True:
            await read_request(reader)
            for i in range(len(answer)):
                writer.write(answer[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.001)

    async def go():
        async with Server(handler) as server:
            first, second = await post_twice(server)
            return server.connections, first[1], second[1]

    assert run(go()) == (1, b"hello world", b"hello world")


def test_close_delimited_body_is_read_to_the_close_and_not_reused():
    async def handler(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"part two")
        await writer.drain()

    async def go():
        async with Server(handler) as server:
            first, second = await post_twice(server)
            return server, first, second

    server, first, second = run(go())
    assert first[1] == second[1] == b"part one, part two"
    assert server.connections == 2


def test_content_length_body_split_across_many_writes():
    payload = bytes(range(256)) * 64

    async def handler(reader, writer, state):
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-")
            await writer.drain()
            await asyncio.sleep(0.005)
            writer.write(b"Length: %d\r\n\r" % len(payload))
            await writer.drain()
            await asyncio.sleep(0.005)
            writer.write(b"\n")
            for i in range(0, len(payload), 1000):
                writer.write(payload[i : i + 1000])
                await writer.drain()
                await asyncio.sleep(0.001)

    async def go():
        async with Server(handler) as server:
            first, second = await post_twice(server, b"x", b"y")
            return server, first, second

    server, first, second = run(go())
    assert first[1] == second[1] == payload
    assert server.connections == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies_are_decoded(encoding):
    text = b'{"choices": []}' * 50
    if encoding == "gzip":
        packed = gzip.compress(text)
    elif encoding == "deflate":
        packed = zlib.compress(text)
    else:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = compressor.compress(text) + compressor.flush()
    name = encoding.replace("raw-", "").encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
        % (name, len(packed))
        + packed
    )

    async def go():
        async with Server(keep_alive(answer)) as server:
            pool = HTTP1Pool()
            result = await pool.post(server.url, b"", {}, timeout=5)
            await pool.close()
            return result

    assert run(go())[1] == text


def test_a_corrupt_gzip_body_is_a_connection_error():
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz"

    async def go():
        async with Server(keep_alive(answer)) as server:
            pool = HTTP1Pool()
            try:
                await pool.post(server.url, b"", {}, timeout=5)
            finally:
                await pool.close()

    with pytest.raises(UpstreamConnectionError):
        run(go())


def test_connection_close_is_not_reused_and_keep_alive_is():
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def go(answer):
        async with Server(keep_alive(answer)) as server:
            pool = HTTP1Pool()
            for _ in range(3):
                status, body, _ = await pool.post(server.url, b"", {}, timeout=5)
                assert status == 200
            await pool.close()
            return server.connections, len(server.requests)

    assert run(go(closing)) == (3, 3)
    assert run(go(OK)) == (1, 3)


def test_a_server_closing_an_idle_connection_between_two_calls():
    async def handler(reader, writer, state):
        # Answers one request with keep-alive, then closes the idle connection.
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)

    async def go():
        async with Server(handler) as server:
            pool = HTTP1Pool()
            first = await pool.post(server.url, b"", {}, timeout=5)
            await asyncio.sleep(0.2)  # the server has closed it by now
            second = await pool.post(server.url, b"", {}, timeout=5)
            await pool.close()
            return server.connections, first[0], second[0]

    assert run(go()) == (2, 200, 200)


def test_idle_connections_are_closed_after_the_keepalive_time():
    async def go():
        hung_up = asyncio.Event()

        async def handler(reader, writer, state):
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
            if await reader.read(1) == b"":
                hung_up.set()

        async with Server(handler) as server:
            pool = HTTP1Pool(keepalive_seconds=0.1)
            await pool.post(server.url, b"", {}, timeout=5)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.wait_for(hung_up.wait(), 2)
            elapsed = loop.time() - t0
            await pool.close()
            return elapsed

    assert 0.05 < run(go()) < 1


def test_the_keep_alive_race_is_retried_once_on_a_fresh_connection():
    """The server reads the next request and closes without a byte (as one that timed
    the idle connection out as the request arrived): retried once, on a new connection."""

    async def handler(reader, writer, state):
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the second request on this connection: dropped

    async def go():
        async with Server(handler) as server:
            pool = HTTP1Pool()
            await pool.post(server.url, b"", {}, timeout=5)
            result = await pool.post(server.url, b"", {}, timeout=5)
            await pool.close()
            return server.connections, result[0]

    assert run(go()) == (2, 200)


def test_a_fresh_connection_closed_without_an_answer_is_not_retried():
    async def handler(reader, writer, state):
        await read_request(reader)

    async def go():
        async with Server(handler) as server:
            pool = HTTP1Pool()
            try:
                with pytest.raises(UpstreamConnectionError):
                    await pool.post(server.url, b"", {}, timeout=5)
            finally:
                await pool.close()
            return server.connections

    assert run(go()) == 1


def test_a_server_that_never_answers_times_out():
    async def handler(reader, writer, state):
        await read_request(reader)
        await asyncio.sleep(10)

    async def go():
        async with Server(handler) as server:
            pool = HTTP1Pool()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await pool.post(server.url, b"", {}, timeout=0.3)
            elapsed = loop.time() - t0
            await pool.close()
            return elapsed

    assert 0.25 < run(go()) < 2


def test_a_stream_whose_next_chunk_never_comes_times_out_per_read():
    async def handler(reader, writer, state):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):  # chunks 0.2 s apart: each wait is under the 0.5 s bound
            writer.write(b"6\r\ndata: \r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
        await asyncio.sleep(10)

    async def go():
        async with Server(handler) as server:
            pool = HTTP1Pool()
            response = await pool.stream(server.url, b"", {}, connect_timeout=5, read_timeout=0.5)
            got = []
            try:
                with pytest.raises(TimeoutError):
                    async for chunk in response:
                        got.append(chunk)
            finally:
                response.close()
                await pool.close()
            return b"".join(got)

    assert run(go()) == b"data: " * 4  # 0.8 s in total, more than one read's bound


def test_a_refused_connection_is_a_connection_error():
    async def go():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = HTTP1Pool()
        try:
            await pool.post(URL(f"http://127.0.0.1:{port}/x"), b"", {}, timeout=5)
        finally:
            await pool.close()

    with pytest.raises(UpstreamConnectionError):
        run(go())


def test_100_continue_is_skipped():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nyes"

    async def go():
        async with Server(keep_alive(answer)) as server:
            first, second = await post_twice(server)
            return server.connections, first[:2], second[:2]

    assert run(go()) == (1, (201, b"yes"), (201, b"yes"))


def test_a_stream_yields_chunks_as_they_come_without_chunk_framing():
    release = asyncio.Event

    async def go():
        gate = release()

        async def handler(reader, writer, state):
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b"7\r\ndata: 1\r\n")
                await writer.drain()
                await gate.wait()
                writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
                await writer.drain()

        async with Server(handler) as server:
            pool = HTTP1Pool()
            response = await pool.stream(server.url, b"", {}, connect_timeout=5, read_timeout=5)
            chunks = []
            async for chunk in response:
                chunks.append(chunk)
                gate.set()  # the second chunk only after the first was seen
            response.close()
            # Read to its end: the connection is reused.
            await pool.post(server.url, b"", {}, timeout=5)
            await pool.close()
            return response.status, chunks, server.connections

    status, chunks, connections = run(go())
    assert status == 200
    assert chunks == [b"data: 1", b"data: 2"]
    assert connections == 1


def test_cancelling_a_stream_midway_closes_its_connection():
    async def go():
        dropped = asyncio.Event()

        async def handler(reader, writer, state):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"7\r\ndata: 1\r\n")
            await writer.drain()
            if await reader.read(1) == b"":  # the client hung up
                dropped.set()

        async with Server(handler) as server:
            pool = HTTP1Pool()
            first_chunk = asyncio.Event()

            async def consume():
                response = await pool.stream(server.url, b"", {}, connect_timeout=5, read_timeout=5)
                try:
                    async for _ in response:
                        first_chunk.set()
                finally:
                    response.close()

            task = asyncio.create_task(consume())
            await first_chunk.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(dropped.wait(), 2)
            # The next call needs a connection of its own: the half-read one was closed.
            server.handler = keep_alive(OK)
            status, _, _ = await pool.post(server.url, b"", {}, timeout=5)
            await pool.close()
            return status, server.connections

    assert run(go()) == (200, 2)


def test_connections_are_bounded_and_reused_lifo():
    async def handler(reader, writer, state):
        while True:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async def go():
        async with Server(handler) as server:
            pool = HTTP1Pool(max_connections=2)
            results = await asyncio.gather(
                *(pool.post(server.url, b"", {}, timeout=5) for _ in range(6))
            )
            await pool.close()
            return [r[0] for r in results], server.connections

    statuses, connections = run(go())
    assert statuses == [200] * 6
    assert connections == 2


def _self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, key_pem


def test_https_with_a_trusted_self_signed_certificate(tmp_path):
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cadata=cert.decode())

    async def go(client_ctx):
        async with Server(keep_alive(OK), ssl_context=server_ctx) as server:
            pool = HTTP1Pool(ssl_context=client_ctx)
            try:
                first = await pool.post(server.url, b"", {}, timeout=5)
                second = await pool.post(server.url, b"", {}, timeout=5)
                return server.connections, first[:2], second[:2], server.requests
            finally:
                await pool.close()

    connections, first, second, requests = run(go(trusting))
    assert (connections, first, second) == (1, (200, b"{}"), (200, b"{}"))
    assert requests[0]["headers"]["host"].startswith("localhost:")
    # The default context verifies: the self-signed certificate is refused.
    with pytest.raises(UpstreamConnectionError):
        run(go(None))
