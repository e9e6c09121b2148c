"""Judge the real-clients run: each check's PASS/FAIL line against the expected failures.

Usage: judge.py RESULTS EXPECTED.yml KNOWN CHECK...
  RESULTS: every driver's output in one file; KNOWN: every check's name, comma-separated
  (an expected failure naming none of them is stale); CHECK...: the checks that ran.

A check with no PASS/FAIL line failed ("no result": the driver crashed or timed out). A
failing check listed in the expected-failures file is an expected failure; a listed check
that passes is STALE (delete its entry) and fails the run, like the MCP conformance
baseline; an unlisted failing check is a regression. Exit 0 only when every check passed or
failed as expected. Prints a table and a summary line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

LINE = re.compile(r"^(PASS|FAIL) ([a-z0-9-]+): ?(.*)$")


def main(results: Path, expected_file: Path, known: set[str], checks: list[str]) -> int:
    seen: dict[str, tuple[str, str]] = {}
    for line in results.read_text().splitlines():
        match = LINE.match(line.strip())
        if match and match[2] in checks:
            seen[match[2]] = (match[1], match[3])
    expected = {}
    if expected_file.name and expected_file.exists():
        expected = (yaml.safe_load(expected_file.read_text()) or {}).get("expected_failures") or {}
    unknown = sorted(set(expected) - known)
    bad = 0
    counts = {"passed": 0, "expected": 0, "regressions": 0, "stale": 0}
    for name in checks:
        missing = "no result (crashed or timed out: see its log)"
        if name not in known:
            missing = "no such check"
        status, reason = seen.get(name, ("FAIL", missing))
        if status == "PASS" and name in expected:
            label, bad, key = "STALE", bad + 1, "stale"
            reason = f"passes now: delete it from the expected failures ({reason})"
        elif status == "PASS":
            label, key = "PASS", "passed"
        elif name in expected:
            label, key = "XFAIL", "expected"
            reason = f"{reason}  [expected: {expected[name]}]"
        else:
            label, bad, key = "FAIL", bad + 1, "regressions"
        counts[key] += 1
        print(f"{label:5} {name}: {reason}")
    for name in unknown:
        print(f"STALE {name}: listed in the expected failures but no such check")
        bad += 1
        counts["stale"] += 1
    print(
        f"real clients: {counts['passed']} passing, {counts['expected']} expected failures, "
        f"{counts['regressions']} regressions, {counts['stale']} stale"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    known = set(sys.argv[3].split(","))
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), known, sys.argv[4:]))
