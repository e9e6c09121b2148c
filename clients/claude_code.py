"""Claude Code (``@anthropic-ai/claude-code``, pinned in package.json) ``claude -p``.

Default model and settings; only ``ANTHROPIC_BASE_URL`` (the gateway) and
``ANTHROPIC_API_KEY`` (an Odock key), a fresh ``HOME``, ``DISABLE_TELEMETRY=1`` and
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``. The default model name is mapped to an
Anthropic-kind fake by a model alias. The prompt carries a fakes/scripted.py marker so the
fake asks Claude Code to run its own ``Read`` tool on a file in the working directory.
PASS when Claude Code exits 0 with an answer and the file's content came back to the
upstream in a ``tool_result``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _common import ANTHROPIC_BASE_URL, API_KEY, BIN, client_env, recorded, run, tail, verdict, walk

NAME = "claude-code"
NOTE = "odock-claude-note: the answer is 42"


def check() -> tuple[str | None, str]:
    """(failure reason or None, what passed)."""
    with tempfile.TemporaryDirectory(prefix="odock-claude-") as tmp:
        home, work = Path(tmp, "home"), Path(tmp, "work")
        home.mkdir()
        work.mkdir()
        note = work / "note.txt"
        note.write_text(NOTE + "\n")
        call = json.dumps({"file_path": str(note)})
        prompt = f"Read note.txt and tell me the answer. [odock-fake-call Read {call}]"
        env = client_env(
            HOME=str(home),
            DISABLE_TELEMETRY="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            ANTHROPIC_BASE_URL=ANTHROPIC_BASE_URL,
            ANTHROPIC_API_KEY=API_KEY,
        )
        code, out = run([str(BIN / "claude"), "-p", prompt], env, work)
    print(out, file=sys.stderr)
    if code != 0:
        return f"{'timed out' if code is None else f'exit {code}'}: {tail(out)}", ""
    if not out.strip():
        return "no answer printed", ""
    back = [
        b
        for r in recorded("ODOCK_ANTHROPIC_RECORD")
        for b in walk(r.get("json"))
        if b.get("type") == "tool_result" and NOTE in json.dumps(b.get("content"))
    ]
    if not back:
        return "no tool_result carrying the file's content reached the upstream", ""
    return None, f"Read ran, the file went back upstream; answer {tail(out, 60)!r}"


if __name__ == "__main__":
    sys.exit(0 if verdict(NAME, *check()) else 1)
