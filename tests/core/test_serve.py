"""The one uvicorn command line: what ``make run``, the bench and the tests share."""

from __future__ import annotations

from apps.core.serve import uvicorn_command


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_serves_the_application_with_our_protocol_on_loopback() -> None:
    argv = uvicorn_command(8123, python="py")
    assert argv[:4] == ["py", "-m", "uvicorn", "odock.asgi:application"]
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--port") == "8123"
    assert _option(argv, "--loop") == "uvloop"
    assert _option(argv, "--http") == "odock.server:HttpProtocol"
    assert _option(argv, "--lifespan") == "on"
    assert _option(argv, "--log-level") == "warning"
    assert "--no-access-log" in argv
    assert "--workers" not in argv
    assert "--timeout-graceful-shutdown" not in argv


def test_workers_log_level_and_graceful_shutdown_are_passed_only_when_asked() -> None:
    argv = uvicorn_command(1, workers=4, log_level=None, graceful_shutdown_seconds=5)
    assert _option(argv, "--workers") == "4"
    assert _option(argv, "--timeout-graceful-shutdown") == "5"
    assert "--log-level" not in argv  # uvicorn's default (info) for `make run`'s console
    assert "--workers" not in uvicorn_command(1, workers=1)
