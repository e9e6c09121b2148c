"""Benchmark the gateway's overhead: the same wrk load, direct to a fake upstream and through
the gateway, in one run.

The script starts the fake OpenAI upstream (``fakes.openai_server --no-validate``) on
``--fake-port`` (9001 by default, the port the demo configuration points its provider at),
then, for every mode (non-streaming chat, streaming chat) and every concurrency, runs wrk
first against the fake directly and then against the gateway, and prints requests/s,
p50/p99 latency and the gateway's added latency. A run with non-2xx answers or socket
errors is flagged: a benchmark of errors is worthless.

The gateway is opened by a *gateway opener*: a context manager ``(args, upstream_url) ->
Target``. Today there is one, :func:`external_gateway`, for a gateway that is already
running (``--gateway URL --key KEY --model MODEL``); one that starts the gateway itself
only has to have the same shape and be passed to :func:`main`.

Usage::

    python bench/bench.py --gateway http://127.0.0.1:8000/v1 --key sk-odock-... \\
        --model demo-model [--concurrency 1,16,64] [--duration 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # apps.core.serve: this checkout's, not an installed one
MODES = ("chat", "stream", "responses", "responses-stream")
#: Responses modes post ``/responses`` (``store: false``, as Codex sends it: no stored-row
#: write per request), the chat modes ``/chat/completions``.
RESPONSES_MODES = ("responses", "responses-stream")
PERCENTILES = ("50", "75", "90", "99")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where wrk sends requests: an OpenAI-style base URL (ending in ``/v1``) and a key."""

    name: str
    base_url: str
    key: str
    model: str
    prompt_bytes: int = 0
    #: The gateway's process id when this script started it (``bench/cpu.py`` reads its CPU time).
    pid: int | None = None
    #: Extra request headers (a peer gateway's routing headers, ``bench/peers.py``).
    headers: tuple[tuple[str, str], ...] = ()


#: Opens a gateway that routes ``Target.model`` to the given upstream base URL.
GatewayOpener = Callable[[argparse.Namespace, str], contextlib.AbstractContextManager[Target]]


@contextlib.contextmanager
def external_gateway(args: argparse.Namespace, upstream_url: str) -> Iterator[Target]:
    """A gateway someone already started (``--gateway/--key/--model``).

    Its configuration must send ``--model`` to ``upstream_url`` (the fake this script
    started), otherwise the comparison is meaningless; the preflight check catches a
    gateway that cannot answer at all.
    """
    if not args.gateway or not args.key:
        raise SystemExit("bench: --gateway and --key are required (a running gateway)")
    yield Target("gateway", args.gateway.rstrip("/"), args.key, args.model)


@contextlib.contextmanager
def local_gateway(args: argparse.Namespace, upstream_url: str) -> Iterator[Target]:
    """Start a gateway process of this checkout (uvicorn + uvloop + httptools, one worker)
    on a fresh SQLite database in a temporary folder (or ``--database-url``), seeded by
    ``bench/seed.py``; ``--governance typical|full`` adds budgets and rate limits;
    ``--failing-primary`` puts a primary deployment in front that answers every request
    with a 500 at once, so each request pays one failed attempt and one failover."""
    with contextlib.ExitStack() as stack:
        failing_url = ""
        if args.failing_primary:
            # Zero latency: the primary fails fast, the cost measured is the retry itself.
            failing_args = argparse.Namespace(**{**vars(args), "upstream_latency_ms": 0})
            failing_url = stack.enter_context(
                fake_upstream(failing_args, port=0, extra=("--fail-status", "500"))
            )
        yield from _local_gateway(args, upstream_url, failing_url)


def _local_gateway(args: argparse.Namespace, upstream_url: str, failing_url: str):
    from apps.core.serve import uvicorn_command

    with tempfile.TemporaryDirectory(prefix="odock-bench-var-") as var:
        env = {**os.environ, "ODOCK_VAR_DIR": var, "ODOCK_LOG_LEVEL": "WARNING"}
        if failing_url:
            env["ODOCK_BREAKER_THRESHOLD"] = "1000000000"  # never rest the failing primary
        env["ODOCK_AUDIT_DURABLE"] = "true" if args.audit == "durable" else "false"
        env["ODOCK_AUDIT_SPOOL_DIR"] = str(Path(var) / "audit-spool")
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        py = sys.executable
        subprocess.run(
            [py, "manage.py", "migrate", "-v", "0", "--noinput"], cwd=REPO_ROOT, env=env, check=True
        )
        seed = [py, "bench/seed.py", "--upstream", upstream_url, "--model", args.model]
        seed += ["--governance", "full" if args.governed else args.governance]
        if failing_url:
            seed += ["--failing-primary", failing_url]
        if args.guardrails:
            seed += ["--guardrails"]
        seed += ["--provider-kind", args.provider_kind]
        key = (
            subprocess.run(seed, cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        port = args.gateway_port
        proc = subprocess.Popen(
            uvicorn_command(port, workers=getattr(args, "workers", 1), python=py),
            cwd=REPO_ROOT,
            env=env,
        )
        try:
            _wait_for_port(port, proc, 30)
            yield Target("gateway", f"http://127.0.0.1:{port}/v1", key, args.model, pid=proc.pid)
        finally:
            proc.terminate()
            proc.wait(15)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: the gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):  # noqa: S310
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("bench: the gateway did not become ready")


# --------------------------------------------------------------------------- wrk


@dataclasses.dataclass
class WrkResult:
    """What one wrk run measured (latencies in milliseconds)."""

    requests: int
    rps: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk_output(text: str) -> WrkResult:
    """Parse wrk's summary (run with ``--latency``)."""
    rps_match = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if rps_match is None:
        raise ValueError(f"could not find Requests/sec in wrk output:\n{text}")
    latency: dict[str, float] = {}
    for pct, value, unit in re.findall(
        r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE
    ):
        latency[pct.split(".")[0]] = float(value) * _UNIT_MS[unit]
    requests_match = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    socket_errors = {}
    if socket is not None:
        socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, socket.groups()), strict=True)
        )
    return WrkResult(
        requests=int(requests_match.group(1)) if requests_match else 0,
        rps=float(rps_match.group(1)),
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


PROSE = (
    "The quarterly review covers revenue, churn and the roadmap for the next release. "
    "Please summarise the main risks, list the open questions and suggest next steps. "
)


def request_body(model: str, mode: str, prompt_bytes: int = 0) -> dict[str, Any]:
    """The request every benchmark run sends (a tiny chat, or ``prompt_bytes`` of ordinary
    prose; ``stream: true`` in stream mode)."""
    content = "Hello! Please answer briefly."
    if prompt_bytes > len(content):
        content = (PROSE * (prompt_bytes // len(PROSE) + 1))[:prompt_bytes]
    body: dict[str, Any]
    if mode in RESPONSES_MODES:
        body = {"model": model, "input": content, "store": False}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if mode in ("stream", "responses-stream"):
        body["stream"] = True
    return body


def endpoint_path(mode: str) -> str:
    return "/responses" if mode in RESPONSES_MODES else "/chat/completions"


def _lua_string(value: str) -> str:
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    return f"[{'=' * level}[{value}]{'=' * level}]"


def wrk_script(target: Target, mode: str) -> str:
    """A wrk Lua script that POSTs the benchmark body with the target's key."""
    body = json.dumps(request_body(target.model, mode, target.prompt_bytes), separators=(",", ":"))
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = {_lua_string("Bearer " + target.key)}\n'
        + "".join(
            f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}\n"
            for name, value in target.headers
        )
        + f"wrk.body = {_lua_string(body)}\n"
    )


def run_wrk(
    wrk: str,
    target: Target,
    mode: str,
    concurrency: int,
    duration: float,
    threads: int,
    timeout: str,
    script_dir: Path,
) -> WrkResult:
    """One wrk run against ``target``; returns the parsed result."""
    script = script_dir / f"{target.name}-{mode}.lua"
    script.write_text(wrk_script(target, mode))
    command = [
        wrk,
        f"-t{max(1, min(threads, concurrency))}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout}",
        "--latency",
        "-s",
        str(script),
        f"{target.base_url}{endpoint_path(mode)}",
    ]
    completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
        command, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0 or str(script) in completed.stderr:  # a Lua error: rc 0
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_wrk_output(completed.stdout)


# --------------------------------------------------------------------------- time to first token

#: The stream modes, the only ones with a first token before the end of the answer.
STREAM_MODES = ("stream", "responses-stream")


@dataclasses.dataclass
class TtftResult:
    """What one time-to-first-token run measured (milliseconds, client side).

    ``ttft_ms``: from writing the request to the arrival of the first byte of the first SSE
    event that carries answer text (a chat ``delta.content`` that is not empty, or a
    ``response.output_text.delta``); ``end_ms``: to the end of the stream. wrk only sees the
    latter."""

    requests: int
    rps: float
    ttft_ms: dict[str, float]
    end_ms: dict[str, float]
    errors: int
    first_error: str | None = None


class _Framing:
    """Incremental HTTP/1.1 response reader that timestamps the SSE lines of its body.

    Fed with ``(bytes, arrival time)``; undoes chunked transfer coding (or counts a
    Content-Length), splits the body into lines and reports the arrival time of the first
    byte of the first content-delta event. Just enough HTTP for a benchmark client."""

    def __init__(self, mode: str, sent_at: float) -> None:
        self.mode = mode
        self.sent_at = sent_at
        self.buffer = bytearray()
        self.head_done = False
        self.status = 0
        self.chunked = False
        self.remaining: int | None = None  # body bytes (Content-Length) or of the chunk
        self.close = False
        self.done = False
        self.first_token_at: float | None = None
        self.line = bytearray()
        self.line_at = 0.0
        self.error_body = bytearray()

    def feed(self, data: bytes, now: float) -> None:
        self.buffer += data
        if not self.head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
        if self.chunked:
            self._chunks(now)
        else:
            body, self.buffer = bytes(self.buffer), bytearray()
            if self.remaining is not None:
                body = body[: self.remaining]
                self.remaining -= len(body)
                self.done = self.remaining <= 0
            self._body(body, now)

    def eof(self) -> None:
        """The server closed the connection: the end of a body without framing."""
        if self.head_done and not self.chunked and self.remaining is None:
            self.done = True

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1])
        self.close = parts[0] == "HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                self.chunked = True
            elif name == "content-length":
                self.remaining = int(value)
            elif name == "connection":
                self.close = value == "close"
        if self.chunked:
            self.remaining = None
        self.head_done = True
        if not self.chunked and self.remaining == 0:
            self.done = True

    def _chunks(self, now: float) -> None:
        """Undo chunked coding; ``remaining`` counts a chunk's data and its CRLF. The body
        is sliced only while it is still looked at (before the first token, or an error)."""
        buffer, pos, size = self.buffer, 0, len(self.buffer)
        while pos < size and not self.done:
            if self.remaining is None:  # a chunk's size line
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(buffer[pos:end].split(b";")[0], 16)
                pos = end + 2
                if length == 0:  # the last chunk; trailers are not expected
                    self.done = True
                    break
                self.remaining = length + 2
            take = min(self.remaining, size - pos)
            data = min(take, self.remaining - 2)
            if data > 0 and (self.status != 200 or self.first_token_at is None):
                self._body(bytes(buffer[pos : pos + data]), now)
            pos += take
            self.remaining -= take
            if self.remaining == 0:
                self.remaining = None
        del buffer[:pos]

    def _body(self, body: bytes, now: float) -> None:
        if self.status != 200:
            self.error_body += body[: 500 - len(self.error_body)]
            return
        if self.first_token_at is not None or not body:
            return
        if not self.line:
            self.line_at = now
        self.line += body
        while self.first_token_at is None:
            end = self.line.find(b"\n")
            if end < 0:
                return
            line = bytes(self.line[:end])
            del self.line[: end + 1]
            if _is_content_delta(line, self.mode):
                self.first_token_at = self.line_at
            self.line_at = now  # the next line began in this read


def _is_content_delta(line: bytes, mode: str) -> bool:
    """Whether one SSE line is a ``data:`` event carrying answer text."""
    if not line.startswith(b"data:"):
        return False
    if mode == "responses-stream":
        if b"response.output_text.delta" not in line:
            return False
        event = orjson.loads(line[5:])
        return event.get("type") == "response.output_text.delta" and bool(event.get("delta"))
    if b'"content"' not in line:
        return False
    event = orjson.loads(line[5:])
    choices = event.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def _percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles (ms) of one run."""
    if not values:
        return {}
    ordered = sorted(values)
    return {
        pct: round(ordered[max(0, math.ceil(len(ordered) * float(pct) / 100) - 1)] * 1000, 3)
        for pct in PERCENTILES
    }


def _raw_request(target: Target, mode: str) -> tuple[str, int, bytes]:
    """Host, port and the bytes of the benchmark request (the same body and headers wrk
    sends), built once per run."""
    url = urllib.parse.urlsplit(target.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = json.dumps(request_body(target.model, mode, target.prompt_bytes)).encode()
    headers = {
        "Host": f"{host}:{port}",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {target.key}",
        **dict(target.headers),
        "Content-Length": str(len(body)),
    }
    head = f"POST {url.path.rstrip('/')}{endpoint_path(mode)} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return host, port, head.encode("latin-1") + b"\r\n" + body


class _TtftRun:
    """The shared state of one run: what is left to send and what was measured."""

    def __init__(self, mode: str, request: bytes, deadline: float, budget: int | None) -> None:
        self.mode = mode
        self.request = request
        self.deadline = deadline
        self.budget = -1 if budget is None else budget
        self.ttfts: list[float] = []
        self.ends: list[float] = []
        self.errors: list[str] = []

    def more(self) -> bool:
        """Whether another request may start (and, if so, count it)."""
        if self.budget == 0 or time.perf_counter() >= self.deadline:
            return False
        self.budget -= 1
        return True

    def record(self, framing: _Framing, ended: float) -> None:
        if framing.status != 200:
            self.errors.append(f"{framing.status}: {framing.error_body.decode('utf-8', 'replace')}")
        elif framing.first_token_at is None:
            self.errors.append("a stream without any content delta")
        else:
            self.ttfts.append(framing.first_token_at - framing.sent_at)
            self.ends.append(ended - framing.sent_at)


class _TtftConnection(asyncio.Protocol):
    """One keep-alive connection sending the request again as soon as an answer ends.

    A protocol, not a stream reader: the arrival time is read in ``data_received`` itself,
    and no coroutine switch per read adds to the client's cost."""

    def __init__(self, run: _TtftRun) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.framing: _Framing | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if not self.run.more():
            self.framing = None
            self.transport.close()
            return
        self.framing = _Framing(self.run.mode, time.perf_counter())
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        framing = self.framing
        assert framing is not None and self.transport is not None
        try:
            framing.feed(data, now)
        except ValueError as exc:  # not HTTP, or not JSON where an event was expected
            self.fail(f"{type(exc).__name__}: {exc}")
            return
        if framing.done:
            self.run.record(framing, now)
            self.framing = None
            if framing.close:
                self.transport.close()
            else:
                self._send()

    def eof_received(self) -> bool:
        framing = self.framing
        if framing is not None:
            framing.eof()
            if framing.done:
                self.run.record(framing, time.perf_counter())
                self.framing = None
        return False  # close our side too

    def fail(self, reason: str) -> None:
        """Count the request in flight as an error and drop the connection."""
        if self.framing is not None:
            self.run.errors.append(reason)
            self.framing = None
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.framing is not None:
            self.run.errors.append(f"connection lost mid-answer: {exc}")
            self.framing = None
        if not self.closed.done():
            self.closed.set_result(None)


async def _ttft_run(
    target: Target,
    mode: str,
    concurrency: int,
    duration: float,
    max_requests: int | None,
    timeout: float,
) -> TtftResult:
    host, port, request = _raw_request(target, mode)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    run = _TtftRun(mode, request, started + duration, max_requests)
    connections: list[_TtftConnection] = []

    async def worker() -> None:
        while run.more():
            run.budget += 1  # the connection's first request counts itself
            try:
                _, connection = await loop.create_connection(
                    lambda: _TtftConnection(run), host, port
                )
            except OSError as exc:
                run.errors.append(f"connect: {exc}")
                await asyncio.sleep(0.1)
                continue
            connections.append(connection)
            await connection.closed
            connections.remove(connection)

    async def watchdog() -> None:
        """Every request bounded by ``timeout``, without a timer per request."""
        while True:
            await asyncio.sleep(min(0.5, timeout / 2))
            now = time.perf_counter()
            for connection in list(connections):
                framing = connection.framing
                if framing is not None and now - framing.sent_at > timeout:
                    connection.fail(f"no complete answer within {timeout} s")

    guard = asyncio.ensure_future(watchdog())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        guard.cancel()
    elapsed = time.perf_counter() - started
    return TtftResult(
        requests=len(run.ttfts),
        rps=round(len(run.ttfts) / elapsed, 1) if elapsed > 0 else 0.0,
        ttft_ms=_percentiles(run.ttfts),
        end_ms=_percentiles(run.ends),
        errors=len(run.errors),
        first_error=run.errors[0][:500] if run.errors else None,
    )


def run_ttft(
    target: Target,
    mode: str,
    concurrency: int,
    duration: float,
    *,
    max_requests: int | None = None,
    timeout: float = 10.0,
) -> TtftResult:
    """Time to first token of ``mode`` (a stream mode) against ``target``: ``concurrency``
    keep-alive connections, each sending the benchmark request again as soon as the last
    answer ended, for ``duration`` s (or ``max_requests`` in all). A raw-socket asyncio
    client on uvloop, so its own cost per request stays small and the same for every
    target; its clock reads happen when the event loop hands it the bytes."""
    if mode not in STREAM_MODES:
        raise ValueError(f"time to first token needs a stream mode, not {mode!r}")
    collecting = gc.isenabled()
    gc.disable()  # a collection in the client would show as a slow first token
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_ttft_run(target, mode, concurrency, duration, max_requests, timeout))
    finally:
        if collecting:
            gc.enable()


# --------------------------------------------------------------------------- fake upstream


@contextlib.contextmanager
def fake_upstream(
    args: argparse.Namespace, *, port: int | None = None, extra: Sequence[str] = ()
) -> Iterator[str]:
    """Run the fake upstream in a subprocess; yields its base URL (``.../v1``)."""
    command = [
        sys.executable,
        "-m",
        "fakes.openai_server",
        "--no-validate",
        "--host",
        args.fake_host,
        "--port",
        str(args.fake_port if port is None else port),
        "--completion-tokens",
        str(args.completion_tokens),
        "--latency-ms",
        str(args.upstream_latency_ms),
        *extra,
    ]
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = _wait_until_listening(process, lines, timeout=20)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_until_listening(
    process: subprocess.Popen[str], lines: queue.Queue[str | None], timeout: float
) -> str:
    output: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        output.append(line)
        match = re.search(r"listening on (\S+)", line)
        if match:
            return match.group(1)
    process.kill()
    raise SystemExit(
        f"bench: the fake upstream did not start (exit code {process.poll()}):\n" + "".join(output)
    )


# --------------------------------------------------------------------------- benchmark


def preflight(target: Target, mode: str) -> None:
    """One request with the benchmark body: fail fast if the target cannot answer it."""
    body = json.dumps(request_body(target.model, mode, target.prompt_bytes)).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the user's target
        f"{target.base_url}{endpoint_path(mode)}",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {target.key}",
            **dict(target.headers),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        message = f"bench: {target.name} answered {exc.code} to a {mode} request: {detail}"
        raise SystemExit(message) from None
    except OSError as exc:
        message = f"bench: cannot reach {target.name} at {target.base_url}: {exc}"
        raise SystemExit(message) from None
    if mode == "stream" and "data: [DONE]" not in text:
        raise SystemExit(f"bench: {target.name} stream did not end with [DONE]: {text[:500]}")
    if mode == "responses-stream" and "response.completed" not in text:
        message = f"bench: {target.name} stream did not end with response.completed: {text[:500]}"
        raise SystemExit(message)


def _row(mode: str, concurrency: int, direct: WrkResult, gateway: WrkResult) -> dict[str, Any]:
    def overhead(pct: str) -> float | None:
        if pct in direct.latency_ms and pct in gateway.latency_ms:
            return round(gateway.latency_ms[pct] - direct.latency_ms[pct], 3)
        return None

    return {
        "mode": mode,
        "concurrency": concurrency,
        "direct": dataclasses.asdict(direct),
        "gateway": dataclasses.asdict(gateway),
        "ratio": round(gateway.rps / direct.rps, 3) if direct.rps else None,
        "overhead_p50_ms": overhead("50"),
        "overhead_p99_ms": overhead("99"),
        "errors": direct.errors > 0 or gateway.errors > 0,
    }


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a fixed-width text table (latencies in ms)."""
    header = (
        "mode",
        "conc",
        "direct rps",
        "gw rps",
        "ratio",
        "direct p50",
        "direct p99",
        "gw p50",
        "gw p99",
        "+p50",
        "+p99",
        "errors",
    )
    lines = [header]
    for row in rows:
        direct, gateway = row["direct"], row["gateway"]
        problems = []
        for name, result in (("direct", direct), ("gw", gateway)):
            errors = result["non_2xx"] + sum(result["socket_errors"].values())
            if errors:
                problems.append(
                    f"{name}: {result['non_2xx']} non-2xx, "
                    f"{sum(result['socket_errors'].values())} socket"
                )
        lines.append(
            (
                row["mode"],
                str(row["concurrency"]),
                f"{direct['rps']:.0f}",
                f"{gateway['rps']:.0f}",
                "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
                _fmt_ms(direct["latency_ms"].get("50")),
                _fmt_ms(direct["latency_ms"].get("99")),
                _fmt_ms(gateway["latency_ms"].get("50")),
                _fmt_ms(gateway["latency_ms"].get("99")),
                _fmt_ms(row["overhead_p50_ms"]),
                _fmt_ms(row["overhead_p99_ms"]),
                "ERRORS " + "; ".join(problems) if problems else "ok",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        cells = [
            cell.ljust(width) if i in (0, len(header) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def run_benchmark(
    args: argparse.Namespace, wrk: str, open_gateway: GatewayOpener
) -> list[dict[str, Any]]:
    """Start the fake, open the gateway, and measure every mode x concurrency."""
    rows: list[dict[str, Any]] = []
    with (
        fake_upstream(args) as upstream_url,
        open_gateway(args, upstream_url) as gateway,
        tempfile.TemporaryDirectory(prefix="odock-bench-") as tmp,
    ):
        direct = Target("direct", upstream_url, "sk-fake-direct", args.model, args.prompt_bytes)
        gateway = dataclasses.replace(gateway, prompt_bytes=args.prompt_bytes)
        log(f"fake upstream: {upstream_url}   gateway: {gateway.base_url}  model: {args.model}")
        for mode in args.modes:
            for target in (direct, gateway):
                preflight(target, mode)
        for mode in args.modes:
            for concurrency in args.concurrency:
                results = {}
                for target in (direct, gateway):
                    wrk_args = (args.threads, args.wrk_timeout, Path(tmp))
                    if args.warmup > 0:
                        run_wrk(wrk, target, mode, concurrency, args.warmup, *wrk_args)
                    result = run_wrk(wrk, target, mode, concurrency, args.duration, *wrk_args)
                    results[target.name] = result
                    flag = f"  ({result.errors} ERRORS)" if result.errors else ""
                    log(
                        f"[{mode} c={concurrency}] {target.name:>7}: {result.rps:9.0f} rps  "
                        f"p50 {_fmt_ms(result.latency_ms.get('50'))} ms  "
                        f"p99 {_fmt_ms(result.latency_ms.get('99'))} ms{flag}"
                    )
                rows.append(_row(mode, concurrency, results["direct"], results["gateway"]))
    return rows


def validation_cost(model: str, rounds: int = 20_000) -> dict[str, float]:
    """Microseconds per request the schema check (``apps.gateway.request_schema``) costs, on
    the body this benchmark sends and on larger typical ones; measured in this process."""
    sys.path.insert(0, str(REPO_ROOT))
    from apps.gateway.request_schema import CHAT_COMPLETIONS

    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "user", "content": "And tomorrow?"},
    ]
    bodies = {
        "bench body": request_body(model, "chat"),
        "4 KB prompt": request_body(model, "chat", 4096),
        "tool conversation": {
            "model": model,
            "messages": conversation,
            "tools": [tool],
            "temperature": 0.2,
            "max_tokens": 256,
        },
    }
    out = {}
    for name, body in bodies.items():
        CHAT_COMPLETIONS.check(body)
        started = time.perf_counter()
        for _ in range(rounds):
            CHAT_COMPLETIONS.check(body)
        out[name] = (time.perf_counter() - started) / rounds * 1e6
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _concurrency_list(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers") from exc
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def _mode_list(value: str) -> list[str]:
    modes = [part.strip() for part in value.split(",") if part.strip()]
    unknown = set(modes) - set(MODES)
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"modes must be among {', '.join(MODES)}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    """The CLI options."""
    parser = argparse.ArgumentParser(
        description="Measure the gateway's overhead against a fake OpenAI upstream with wrk."
    )
    parser.add_argument("--gateway", help="gateway base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--key", help="a virtual key of the gateway (sk-odock-...)")
    parser.add_argument("--model", default="demo-model", help="model name to request")
    parser.add_argument(
        "--concurrency", type=_concurrency_list, default=[1, 16, 64], help="e.g. 1,16,64"
    )
    parser.add_argument("--modes", type=_mode_list, default=list(MODES), help=",".join(MODES))
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (max)")
    parser.add_argument("--wrk-timeout", default="10s", help="wrk per-request timeout")
    parser.add_argument("--fake-host", default="127.0.0.1")
    parser.add_argument(
        "--fake-port", type=int, default=9001, help="port of the fake upstream (0: any free)"
    )
    parser.add_argument("--completion-tokens", type=int, default=8, help="fake output tokens")
    parser.add_argument(
        "--upstream-latency-ms", type=float, default=0, help="latency the fake adds"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--start-gateway",
        action="store_true",
        help="start a gateway of this checkout instead of --gateway",
    )
    parser.add_argument(
        "--governed",
        action="store_true",
        help="with --start-gateway: same as --governance full",
    )
    parser.add_argument(
        "--governance",
        choices=("none", "typical", "full"),
        default="none",
        help="with --start-gateway: typical = team and key budgets and a team RPM (3 "
        "counters); full = budget, rpm, tpm and concurrency at all four levels (16)",
    )
    parser.add_argument(
        "--provider-kind",
        choices=("openai", "openai_compatible"),
        default="openai",
        help="with --start-gateway: the fake's kind; openai_compatible has /v1/responses "
        "translated to chat completions instead of passed through",
    )
    parser.add_argument(
        "--prompt-bytes", type=int, default=0, help="pad the prompt to this size (ordinary prose)"
    )
    parser.add_argument(
        "--guardrails",
        action="store_true",
        help="with --start-gateway: every built-in guardrail detector on, prompt and answer",
    )
    parser.add_argument(
        "--failing-primary",
        action="store_true",
        help="with --start-gateway: every request first meets a primary that fails with "
        "500 at once, then fails over to the fake (one retry per request)",
    )
    parser.add_argument(
        "--audit",
        choices=("durable", "async"),
        default="durable",
        help="with --start-gateway: hold each response's last byte until its audit record "
        "is committed (durable, the default) or write records behind the response (async)",
    )
    parser.add_argument("--gateway-port", type=int, default=8765)
    parser.add_argument("--database-url", default="", help="with --start-gateway")
    parser.add_argument("--redis-url", default="", help="with --start-gateway")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --start-gateway: uvicorn worker processes (more than one needs "
        "--database-url and --redis-url: the embedded stores are per process)",
    )
    return parser


def main(argv: Sequence[str] | None = None, open_gateway: GatewayOpener = external_gateway) -> int:
    """Run the benchmark; ``open_gateway`` decides how the gateway under test is reached."""
    args = build_parser().parse_args(argv)
    if args.start_gateway:
        open_gateway = local_gateway
    wrk = shutil.which("wrk")
    if wrk is None:
        log("bench: wrk is not installed. Install it with: apt-get install wrk")
        return 2
    started_at = datetime.datetime.now(datetime.UTC)
    validation = validation_cost(args.model)
    rows = run_benchmark(args, wrk, open_gateway)
    print(format_table(rows))
    print(
        "\nrequest validation (µs per request): "
        + ", ".join(f"{name} {us:.1f}" for name, us in validation.items())
    )
    if any(row["errors"] for row in rows):
        print("\nWARNING: some runs had non-2xx answers or socket errors; see 'errors'.")
    if args.json is not None:
        report = {
            "started_at": started_at.isoformat(),
            "cpu_count": os.cpu_count(),
            "config": {
                key: (str(value) if isinstance(value, Path) else value)
                for key, value in vars(args).items()
                if key != "key"
            },
            "results": rows,
            "validation_us": validation,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"results written to {args.json}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
