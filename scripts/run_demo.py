"""`make run`: migrate, seed the demo, start the fake provider and the gateway.

Everything on the embedded default (SQLite under var/, no Redis) unless DATABASE_URL /
REDIS_URL are set.

Every step has a deadline scaled to its work and says what it is waiting for. Each child
runs in a process group of its own, so a Ctrl-C in the terminal reaches only this script;
it then sends each child exactly ONE SIGTERM — uvicorn's graceful path: open requests
finish, then the ASGI lifespan shutdown drains the audit writer and seals its chains (a
second signal would make uvicorn force-exit and skip that) — waits a bounded time, and
kills only what is still there after it. On any failure every process this script started
is stopped the same way and it exits non-zero with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's apps.core.serve, not an installed one's
from apps.core.serve import uvicorn_command  # noqa: E402  (needs ROOT on the path)

PY = sys.executable
POLL = 0.1  # seconds between checks while waiting
PROGRESS_EVERY = 10.0  # say we are still waiting this often
# Deadlines (seconds), scaled by ODOCK_START_TIMEOUT_FACTOR on a slow or loaded machine. A
# fresh SQLite database applies every migration: ~0.3 s each on a loaded 2-core machine.
MIGRATE_BASE, MIGRATE_PER_MIGRATION = 30.0, 1.5
SEED_DEADLINE = 60.0
FAKE_DEADLINE = 30.0
# The gateway imports Django and the gateway, compiles the policy snapshot and loads the
# tokenizer before /readyz answers 200.
GATEWAY_DEADLINE = 90.0
# Graceful stop: uvicorn's --timeout-graceful-shutdown (5 s), then the lifespan shutdown
# (the audit writer drains and seals: at most 10 s, the budget alerts: 10 s).
GATEWAY_STOP_GRACE = 30.0
FAKE_STOP_GRACE = 5.0


class StartFailed(Exception):
    """A step did not finish: the message says which and why."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM while starting or serving."""


def _timeout_factor() -> float:
    raw = os.environ.get("ODOCK_START_TIMEOUT_FACTOR", "1")
    try:
        factor = float(raw)
    except ValueError:
        sys.exit(f"ODOCK_START_TIMEOUT_FACTOR must be a number, not {raw!r}")
    if factor <= 0:
        sys.exit(f"ODOCK_START_TIMEOUT_FACTOR must be positive, not {raw!r}")
    return factor


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _ready(url: str) -> bool:
    """``url`` answers 200 (the gateway's /readyz: snapshot loaded, database answering)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _die_with_parent() -> None:
    """In the child (Linux): a SIGTERM if this script dies without stopping it (SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: S110 (not Linux: the children outlive a killed script)
        pass


class Supervisor:
    """The processes this script started, and the one way to stop them all."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.signals = 0  # SIGINT, SIGTERM or SIGHUP received
        self.stopping = False

    # --- signals ---------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if not self.stopping:
            return  # the waiting loops notice ``signals`` within POLL seconds
        if self.signals == 2:
            print(
                "  still stopping gracefully (the gateway drains and seals its audit log); "
                "press Ctrl-C once more to kill at once",
                flush=True,
            )
        else:
            for _name, proc in self.children:
                self._signal(proc, signal.SIGKILL)  # stop_all's waits see them go

    def check(self) -> None:
        if self.signals:
            raise Interrupted

    # --- children --------------------------------------------------------------------

    def start(self, name: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            start_new_session=True,  # a group of its own: the terminal's Ctrl-C is ours only
            preexec_fn=_die_with_parent,  # single-threaded here: safe
            **kwargs,  # type: ignore[arg-type]
        )
        self.children.append((name, proc))
        return proc

    def run_step(self, what: str, argv: Sequence[str], deadline: float) -> str:
        """Run a one-shot command (its output captured), bounded by ``deadline`` seconds.
        Lines it prints as ``phase: <what>`` say what it is doing now."""
        deadline *= self.factor
        label = [what]
        print(f"  {what}…", flush=True)
        with tempfile.TemporaryFile() as log:  # a file, not a pipe: never blocks the child
            proc = self.start(what, argv, stdout=log, stderr=subprocess.STDOUT)

            def done() -> bool:
                ended = proc.poll() is not None
                log.seek(0)
                phases = [
                    line.removeprefix(b"phase: ").decode(errors="replace").strip()
                    for line in log.read().splitlines()
                    if line.startswith(b"phase: ")
                ]
                if phases and phases[-1] != label[0]:
                    label[0] = phases[-1]
                    print(f"  {label[0]}…", flush=True)
                return ended

            self.wait_until(lambda: label[0], done, deadline, proc=None)
            self.children.remove((what, proc))  # ended: nothing left to stop
            log.seek(0)
            output = log.read().decode(errors="replace")
        if proc.returncode != 0:
            raise StartFailed(f"{label[0]} failed (exit status {proc.returncode}):\n{output}")
        return output

    def wait_until(
        self,
        what: str | Callable[[], str],
        done: Callable[[], bool],
        deadline: float,
        *,
        proc: subprocess.Popen[bytes] | None,
    ) -> None:
        """Poll ``done`` until it holds; fail at ``deadline`` or if ``proc`` exits first.
        ``what`` names what is awaited (a callable: what it is right now)."""
        started = time.monotonic()
        next_note = started + PROGRESS_EVERY
        while not done():
            now_what = what() if callable(what) else what
            self.check()
            now = time.monotonic()
            if proc is not None and proc.poll() is not None:
                raise StartFailed(
                    f"{now_what}: the process exited with status {proc.returncode} before it was "
                    "ready (its log is above)"
                )
            if now - started > deadline:
                raise StartFailed(
                    f"{now_what}: not done after {deadline:.0f} s (a slow machine? set "
                    "ODOCK_START_TIMEOUT_FACTOR=3 to wait three times longer)"
                )
            if now >= next_note:
                took = f"{now - started:.0f} s of {deadline:.0f} s"
                print(f"  … still {now_what} ({took})", flush=True)
                next_note = now + PROGRESS_EVERY
            time.sleep(POLL)

    def stop_all(self) -> bool:
        """Stop every child, the newest first (the gateway before the fake it calls): one
        SIGTERM to its group, a bounded wait, SIGKILL as the last resort. True if all
        stopped by themselves."""
        self.stopping = True
        graceful = True
        for name, proc in reversed(self.children):
            grace = GATEWAY_STOP_GRACE if name == "gateway" else FAKE_STOP_GRACE
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(grace * self.factor)
                except subprocess.TimeoutExpired:
                    print(f"  {name} did not stop within {grace:.0f} s: killed", flush=True)
                    graceful = False
            # Whatever is left in its group (a grandchild), and the leader if it hung.
            self._kill(name, proc)
        return graceful

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    def _kill(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self._signal(proc, signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            print(f"  {name} (pid {proc.pid}) could not be killed", flush=True)


def _migration_count() -> int:
    return len(list(ROOT.glob("apps/*/migrations/0*.py")))


def _gateway_argv(port: int) -> list[str]:
    # uvicorn's own start-up lines (info) on the console; open streams (MCP agents' GET
    # streams) would hold a stop forever without the graceful-shutdown bound.
    return uvicorn_command(port, log_level=None, graceful_shutdown_seconds=5, python=PY)


def _fake_argv(port: int) -> list[str]:
    argv = [PY, "-m", "fakes.openai_server", "--port", str(port), "--api-key", "sk-fake-upstream"]
    if importlib.util.find_spec("openai") is None:
        # The fake checks requests against the openai SDK's types, a test-only dependency;
        # the gateway has already checked them against the API's own schema.
        argv.append("--no-validate")
    return argv


def _banner(base: str, upstream: str, demo_key: str, sup: Supervisor, took: float) -> str:
    pids = ", ".join(f"{name} pid {proc.pid}" for name, proc in sup.children if proc.poll() is None)
    return f"""
  Odock is running, ready in {took:.0f} s ({pids}; embedded mode unless
  DATABASE_URL/REDIS_URL are set).

  Admin:        {base}/admin/   (user: admin, password: odock-admin)
  Gateway:      {base}/v1       (fake upstream provider on {upstream})
  Demo key:     {demo_key}

  curl:
    curl {base}/v1/chat/completions \\
      -H "Authorization: Bearer {demo_key}" -H "Content-Type: application/json" \\
      -d '{{"model": "demo-model", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  Python (pip install openai):
    from openai import OpenAI
    client = OpenAI(base_url="{base}/v1", api_key="{demo_key}")
    reply = client.chat.completions.create(
        model="demo-model", messages=[{{"role": "user", "content": "Hello!"}}])
    print(reply.choices[0].message.content)

  Ctrl-C to stop.
"""


# Migrations and the demo seed in one Django process (one start-up less, seconds on a busy
# machine); it says which it is doing, and prints the demo key last.
PREPARE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")
print("phase: migrating the database", flush=True)
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
print("phase: seeding the demo (admin user, fake provider, models, hierarchy, key)", flush=True)
call_command("odock_demo", upstream=sys.argv[1])
"""


def _start(sup: Supervisor, port: int, fake_port: int) -> None:
    started = time.monotonic()
    # The fake needs no database: it starts while the database is prepared.
    fake = sup.start("fake provider", _fake_argv(fake_port))
    print(f"  started the fake provider (pid {fake.pid})", flush=True)
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    output = sup.run_step(
        "migrating the database",
        [PY, "-c", PREPARE, upstream],
        MIGRATE_BASE + MIGRATE_PER_MIGRATION * _migration_count() + SEED_DEADLINE,
    )
    keys = [line.split(":", 1)[1].strip() for line in output.splitlines() if "demo key:" in line]
    if not keys:
        raise StartFailed(f"the demo set-up printed no demo key:\n{output}")
    sup.wait_until(
        f"waiting for the fake provider on :{fake_port}",
        lambda: not _port_free(fake_port),
        FAKE_DEADLINE * sup.factor,
        proc=fake,
    )
    gateway = sup.start("gateway", _gateway_argv(port))
    print(f"  started the gateway (pid {gateway.pid})", flush=True)
    base = f"http://127.0.0.1:{port}"
    what = f"waiting for the gateway on :{port} (loading Django and the policy snapshot)"
    print(f"  {what}…", flush=True)
    sup.wait_until(
        what, lambda: _ready(f"{base}/readyz"), GATEWAY_DEADLINE * sup.factor, proc=gateway
    )
    print(_banner(base, upstream, keys[-1], sup, time.monotonic() - started), flush=True)


def main() -> int:
    factor = _timeout_factor()
    port = int(os.environ.get("ODOCK_PORT", "8000"))
    fake_port = int(os.environ.get("ODOCK_FAKE_PORT", "9001"))
    for p in (port, fake_port):
        if not _port_free(p):
            print(f"port {p} is already in use (set ODOCK_PORT / ODOCK_FAKE_PORT)", file=sys.stderr)
            return 1
    sup = Supervisor(factor)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: terminal closed
        signal.signal(signum, sup.on_signal)
    try:
        _start(sup, port, fake_port)
        while True:
            sup.check()
            for name, proc in sup.children:
                if proc.poll() is not None:
                    raise StartFailed(f"the {name} exited unexpectedly (status {proc.returncode})")
            time.sleep(POLL * 5)
    except Interrupted:
        print("\n  stopping (the gateway finishes open requests, then seals its audit log)…")
        graceful = sup.stop_all()
        print("  stopped." if graceful else "  stopped (some by force).", flush=True)
        return 0 if graceful else 1
    except StartFailed as exc:
        print(f"\nmake run: {exc}", file=sys.stderr, flush=True)
        print("  stopping everything this script started…", file=sys.stderr, flush=True)
        sup.stop_all()
        return 1
    except BaseException:
        sup.stop_all()
        raise


if __name__ == "__main__":
    sys.exit(main())
