"""The hot path never reaches the ORM (ARCHITECTURE.md, "Hot-path rules").

Each module is imported in a fresh interpreter with no Django settings, and everything that
import pulled in is inspected: what is loaded is what counts, not what the source says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The MCP modules that run per request (the database side is compile.py and wiring.py).
MCP_HOT_PATH = (
    "apps.mcp.call",
    "apps.mcp.endpoint",
    "apps.mcp.errors",
    "apps.mcp.inspect",
    "apps.mcp.metering",
    "apps.mcp.methods",
    "apps.mcp.policy",
    "apps.mcp.relay",
    "apps.mcp.resolve",
    "apps.mcp.sessions",
    "apps.mcp.stages",
    "apps.mcp.upstream",
)
FORBIDDEN_PREFIXES = ("django.db", "django.contrib", "django.apps")

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _gateway_modules() -> list[str]:
    package = ROOT / "apps" / "gateway"
    names = []
    for path in sorted(package.rglob("*.py")):
        if "migrations" in path.parts or path.name == "apps.py":
            continue  # apps.py is Django's AppConfig, loaded by Django itself
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def orm_imports(module: str, *, path: Path = ROOT) -> list[str]:
    """What importing ``module`` loads that belongs to the ORM (or to an app's models)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{path}:{ROOT}"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    return [
        name
        for name in loaded
        if name.startswith(FORBIDDEN_PREFIXES)
        or (name.startswith("apps.") and name.rsplit(".", 1)[-1] in ("models", "admin"))
    ]


@pytest.mark.parametrize("module", _gateway_modules() + list(MCP_HOT_PATH))
def test_hot_path_modules_never_load_the_orm(module):
    assert orm_imports(module) == [], f"{module} reaches the ORM"


def test_the_probe_sees_an_orm_import(tmp_path):
    """The check can fail: a hot-path module that reached for the database is caught."""
    (tmp_path / "leaky_stage.py").write_text(
        "from apps.gateway.errors import GatewayError\nfrom django.db import connection\n"
    )
    assert "django.db" in orm_imports("leaky_stage", path=tmp_path)
