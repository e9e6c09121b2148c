"""What the Python client drivers share: the environment contract, running a client, the
fakes' recordings, and the one-line verdict scripts/real_clients.sh reads.

Environment (set by scripts/real_clients.sh): ``ODOCK_OPENAI_BASE_URL`` (the gateway's /v1)
and ``ODOCK_ANTHROPIC_BASE_URL`` (the gateway; both the fakes themselves with ``--direct``),
``ODOCK_API_KEY`` (an Odock key), ``ODOCK_OPENAI_RECORD`` / ``ODOCK_ANTHROPIC_RECORD`` (the
JSON-lines recordings of the scripted fakes, fakes/scripted.py), ``ODOCK_CLIENTS_BIN`` (the
npm clients' .bin), ``ODOCK_CLIENT_TIMEOUT`` (seconds per client run).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

OPENAI_BASE_URL = os.environ.get("ODOCK_OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
ANTHROPIC_BASE_URL = os.environ.get("ODOCK_ANTHROPIC_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ.get("ODOCK_API_KEY", "")
TIMEOUT = float(os.environ.get("ODOCK_CLIENT_TIMEOUT", "120"))
BIN = Path(os.environ.get("ODOCK_CLIENTS_BIN", Path(__file__).parent / "node_modules/.bin"))


def verdict(name: str, reason: str | None, passed: str = "") -> bool:
    """Print ``PASS name: ...`` (``reason`` None) or ``FAIL name: reason``; True on PASS."""
    print(f"PASS {name}: {passed}" if reason is None else f"FAIL {name}: {reason}", flush=True)
    return reason is None


def recorded(env_name: str) -> list[dict[str, Any]]:
    """The requests a scripted fake received so far (its ``--record-to`` file)."""
    path = Path(os.environ.get(env_name, "/nonexistent"))
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def walk(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every JSON object inside ``value`` (depth first)."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def client_env(**extra: str) -> dict[str, str]:
    """A clean environment for a client: PATH, locale and ``extra`` only, so no provider key
    or endpoint of the machine leaks in (the client sees the gateway and nothing else)."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TERM") if k in os.environ}
    return keep | extra


def run(argv: list[str], env: Mapping[str, str], cwd: Path) -> tuple[int | None, str]:
    """Run a client under the timeout; (exit code or None on timeout, stdout+stderr)."""
    try:
        done = subprocess.run(  # noqa: S603 - the argv is ours: a pinned client
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return None, out
    return done.returncode, done.stdout + done.stderr


def tail(text: str, limit: int = 300) -> str:
    """The end of a client's output, on one line, for a FAIL reason."""
    lines: list[str] = []
    for line in reversed(text.strip().splitlines()):
        if line.strip() and line.strip() not in lines:
            lines.insert(0, line.strip())
        if len(lines) == 3:
            break
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else "…" + joined[-limit:]
