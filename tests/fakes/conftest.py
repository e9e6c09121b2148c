"""Fixtures shared by the tests of the fakes (instead of a copy in each test module)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def wait_for() -> Callable[..., bool]:
    """``wait_for(condition, timeout=5.0)``: poll until true (what a fake's loop does is seen
    from the test's thread a little later); returns the last value."""
    return _wait_for


@pytest.fixture
def run_cli() -> Iterator[Callable[..., str]]:
    """``run_cli(module, label, *args)``: run ``python -m <module> --port 0 ARGS`` and return
    the URL it prints once listening. Each is stopped with SIGTERM and must exit with 0."""
    processes: list[subprocess.Popen[str]] = []

    def start(module: str, label: str, *args: str) -> str:
        command = [sys.executable, "-m", module, "--port", "0", *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"fake {label} server listening on http://127.0.0.1:")
        return line.split()[-1]

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
