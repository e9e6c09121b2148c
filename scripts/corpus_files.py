"""Writing a generated guardrail corpus, or checking it against the frozen files: shared by
``build_heldout.py`` and ``build_heldout2.py`` so both corpora freeze the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def render(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_or_check(
    files: dict[str, list[dict[str, Any]]], out_dir: Path, root: Path, *, check: bool
) -> int:
    """Write each ``name.jsonl``, or with ``check`` only compare; 1 if any differs."""
    differ = []
    for name, rows in files.items():
        path = out_dir / f"{name}.jsonl"
        text = render(rows)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                differ.append(path.name)
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(root)}: {len(rows)} lines")
    if differ:
        print(f"differs from the frozen corpus: {', '.join(differ)}", file=sys.stderr)
        return 1
    return 0
