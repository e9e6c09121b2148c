"""Codex CLI (``@openai/codex``, pinned in package.json) ``codex exec`` through the gateway.

A custom model provider (``wire_api = "responses"``, ``base_url`` = the gateway's /v1, the
key from ``env_key``) in a fresh ``CODEX_HOME``; everything else is Codex's default. The
prompt carries a fakes/scripted.py marker so the fake asks Codex to run its own
``exec_command`` tool (``echo``) for real. PASS when Codex exits 0 with a final answer and
the command's output came back to the upstream as a ``function_call_output`` (the tool
round trip went through the gateway both ways).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _common import API_KEY, BIN, OPENAI_BASE_URL, client_env, recorded, run, tail, verdict, walk

NAME = "codex-exec"
MODEL = "gpt-5.1-codex"  # mapped to the OpenAI-kind fake by a model alias
ECHOED = "odock-codex-ok"
CONFIG = f"""model = "{MODEL}"
model_provider = "odock"

[model_providers.odock]
name = "Odock gateway"
base_url = "{OPENAI_BASE_URL}"
env_key = "ODOCK_API_KEY"
wire_api = "responses"
"""


def check() -> tuple[str | None, str]:
    """(failure reason or None, what passed)."""
    with tempfile.TemporaryDirectory(prefix="odock-codex-") as tmp:
        home, work = Path(tmp, "home"), Path(tmp, "work")
        (home / ".codex").mkdir(parents=True)
        work.mkdir()
        (home / ".codex" / "config.toml").write_text(CONFIG)
        call = json.dumps({"cmd": f"echo {ECHOED}"})
        prompt = f"Run `echo {ECHOED}`, say what it printed. [odock-fake-call exec_command {call}]"
        env = client_env(HOME=str(home), CODEX_HOME=str(home / ".codex"), ODOCK_API_KEY=API_KEY)
        argv = [str(BIN / "codex"), "exec", "--skip-git-repo-check", "--color", "never", prompt]
        code, out = run(argv, env, work)
    print(out, file=sys.stderr)
    if code != 0:
        return f"{'timed out' if code is None else f'exit {code}'}: {tail(out)}", ""
    back = [  # a Responses function_call_output, or the chat "tool" message it became
        o
        for r in recorded("ODOCK_OPENAI_RECORD")
        for o in walk(r.get("json"))
        if (o.get("type") == "function_call_output" and ECHOED in str(o.get("output")))
        or (o.get("role") == "tool" and ECHOED in str(o.get("content")))
    ]
    if not back:
        return "the echo's output never came back upstream (no function_call_output)", ""
    return None, f"exec_command ran, its output went back upstream; answer {tail(out, 60)!r}"


if __name__ == "__main__":
    sys.exit(0 if verdict(NAME, *check()) else 1)
