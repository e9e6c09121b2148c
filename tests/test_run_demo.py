"""`make run` on a fresh clone: it stops everything it started when the gateway fails, and a
Ctrl-C stops the gateway gracefully (the audit log drained and sealed).

Each test clones the repository's committed HEAD into a temporary directory and runs
`make run` there on the embedded default (SQLite in a temporary var dir, no Redis),
pointing the Makefile at this venv (``VENV=…``, the install stamp treated as done: no
install). `make` runs in a session of its own, so a SIGINT to its process group is what a
Ctrl-C in a terminal sends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent

MAKE, GIT = shutil.which("make"), shutil.which("git")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MAKE is None or GIT is None, reason="needs make and git"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    target = tmp_path / "odock"
    subprocess.run([str(GIT), "clone", "--quiet", str(REPO), str(target)], check=True, timeout=60)
    return target


def _processes_in(directory: Path) -> list[str]:
    """Live processes whose working directory is ``directory`` (what `make run` started)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == directory:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = (proc / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie is already gone
                    found.append(f"{proc.name}: {cmdline}")
        except OSError:
            continue
    return found


def _make_run(clone: Path, tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    port, fake_port = _free_port(), _free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment.update(
        ODOCK_VAR_DIR=str(tmp_path / "var"),
        ODOCK_PORT=str(port),
        ODOCK_FAKE_PORT=str(fake_port),
        PYTHONUNBUFFERED="1",
        **env,
    )
    log = tmp_path / "make-run.log"
    stamp = f"{VENV}/.installed-run"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(MAKE), "--no-print-directory", "-o", stamp, "run", f"VENV={VENV}"],
            cwd=clone,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.port, proc.fake_port = port, fake_port  # type: ignore[attr-defined]
    return proc, log


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if proc.poll() is not None:
            pytest.fail(f"make run exited ({proc.returncode}) before {text!r}:\n{content}")
        time.sleep(0.2)
    pytest.fail(f"no {text!r} after {timeout} s:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_gateway_failing_at_start_stops_everything(clone: Path, tmp_path: Path) -> None:
    # A guardrail plugin that cannot be imported: migrate and the demo set-up pass (they
    # never load plugins), the fake provider starts, then the gateway dies at start-up.
    broken = json.dumps({"broken": {"class": "odock_no_such_module.Plugin"}})
    proc, log = _make_run(clone, tmp_path, ODOCK_GUARDRAIL_PLUGINS=broken)
    try:
        proc.wait(240)
    finally:
        _stop(proc)
    output = log.read_text(errors="replace")
    assert proc.returncode != 0, output
    assert "started the fake provider (pid" in output, output
    assert "waiting for the gateway" in output
    assert "exited with status" in output
    assert "Demo key" not in output
    pids = [
        int(line.rsplit("pid ", 1)[1].rstrip(")"))
        for line in output.splitlines()
        if line.strip().startswith("started the ")
    ]
    assert len(pids) == 2, output  # the fake and the gateway were started, and both are gone
    time.sleep(0.5)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert _processes_in(clone) == []
    with socket.socket() as s:  # nobody listens on the fake's port any more
        assert s.connect_ex(("127.0.0.1", proc.fake_port)) != 0  # type: ignore[attr-defined]


def test_ctrl_c_after_a_request_seals_the_audit_log(clone: Path, tmp_path: Path) -> None:
    # Sealing every hour: only the shutdown can seal the record within this test.
    proc, log = _make_run(clone, tmp_path, ODOCK_AUDIT_SEAL_SECONDS="3600")
    try:
        output = _wait_for(log, "Ctrl-C to stop.", proc, timeout=240)
        key = next(line.split()[-1] for line in output.splitlines() if "Demo key:" in line)
        port = proc.port  # type: ignore[attr-defined]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(
                {"model": "demo-model", "messages": [{"role": "user", "content": "Hi"}]}
            ).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        proc.wait(90)
    finally:
        _stop(proc)
    output = log.read_text(errors="replace")
    assert "Application shutdown complete" in output, output
    assert "Exception in 'lifespan'" not in output
    assert "stopped." in output
    assert _processes_in(clone) == []

    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment["ODOCK_VAR_DIR"] = str(tmp_path / "var")
    verify = subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=clone,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK: 1 records in 1 chains, 1 checkpoints"), verify.stdout
    assert "0 not sealed yet" in verify.stdout
