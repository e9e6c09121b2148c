"""Where the vendors' published specs are (``../shared/specs``), for the tests that read them.

They are data kept next to the repository, not in it (3 MB of OpenAPI, see its
``SOURCES.txt``): a test that needs them is skipped on a machine without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def specs_dir() -> Path:
    """The vendor specs folder; skips the calling test when it is not on this machine."""
    for candidate in (ROOT.parent / "shared" / "specs", Path("/work/shared/specs")):
        if (candidate / "openai-openapi.yaml").exists():
            return candidate
    pytest.skip("the vendor specs (../shared/specs) are not on this machine")
