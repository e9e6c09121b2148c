"""`make run`: migrate, seed the demo, start the fake provider and the gateway.

Everything on the embedded default (SQLite under var/, no Redis) unless DATABASE_URL /
REDIS_URL are set. Ctrl-C stops both processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _port_free(port):
        if time.monotonic() > deadline:
            sys.exit(f"nothing is listening on port {port} after {timeout}s")
        time.sleep(0.1)


def _manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)


def main() -> None:
    port = int(os.environ.get("ODOCK_PORT", "8000"))
    fake_port = int(os.environ.get("ODOCK_FAKE_PORT", "9001"))
    for p in (port, fake_port):
        if not _port_free(p):
            sys.exit(f"port {p} is already in use (set ODOCK_PORT / ODOCK_FAKE_PORT)")

    _manage("migrate", "--noinput", "-v", "0")
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    demo = subprocess.run(
        [PY, "manage.py", "odock_demo", "--upstream", upstream],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if demo.returncode != 0:
        sys.exit(f"demo set-up failed:\n{demo.stdout}{demo.stderr}")
    from_settings = subprocess.run(
        [
            PY,
            "-c",
            "from django.conf import settings; import django; django.setup();"
            "print(settings.VAR_DIR)",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "odock.settings"},
    )
    demo_key = (Path(from_settings.stdout.strip()) / "demo_key").read_text().strip()

    fake = subprocess.Popen(
        [
            PY,
            "-m",
            "fakes.openai_server",
            "--port",
            str(fake_port),
            "--api-key",
            "sk-fake-upstream",
        ],
        cwd=ROOT,
    )
    _wait_port(fake_port)
    gateway = subprocess.Popen(
        [
            PY,
            "-m",
            "uvicorn",
            "odock.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "odock.server:HttpProtocol",
            "--lifespan",
            "on",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",  # open streams (MCP agents' GET streams) would hold a stop forever
        ],
        cwd=ROOT,
    )
    _wait_port(port)
    base = f"http://127.0.0.1:{port}"
    print(
        f"""
  Odock is running (embedded mode unless DATABASE_URL/REDIS_URL are set).

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
""",
        flush=True,
    )

    def _stop(*_args: object) -> None:
        for proc in (gateway, fake):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (gateway, fake):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        while gateway.poll() is None and fake.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    _stop()


if __name__ == "__main__":
    main()
