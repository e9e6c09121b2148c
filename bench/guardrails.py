"""Benchmark the guardrail detectors: cost of scanning one prompt with every detector on.

Targets (issue 6): all detectors together well under 1 ms for 4 KB of typical chat text, a few
ms for 64 KB; issue 18: the learned prompt-injection model p50 ≤ 2 ms for 4 KB on one core
(the "prompt_injection by method" section). The script prints, per input, the median and
p99 wall time of ``scan_all`` with every built-in detector (plus two custom rules), then the
same per detector, then hostile inputs (long digit runs, one huge base64 token, "@"-storms…)
that must stay linear.

Usage::

    .venv/bin/python bench/guardrails.py [--rounds 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.guardrails.detectors import (  # noqa: E402
    all_detectors_config,
    build_detectors,
    redact,
    scan_all,
)
from apps.guardrails.detectors.injection import InjectionDetector  # noqa: E402
from apps.guardrails.detectors.prep import prepare  # noqa: E402

PARAGRAPHS = [
    "Hi! Can you help me rewrite this paragraph so it sounds more professional? We shipped "
    "the new onboarding flow last week and the numbers look good: activation went from 41% "
    "to 57% and support tickets dropped by about a third.",
    "Here is the function that fails. It raises a KeyError when the payload has no 'items' "
    "key, which happens for about 3 in 1000 requests according to the logs from 2024-05-14.",
    "```python\ndef total(order: dict) -> float:\n    items = order['items']\n    return "
    "sum(i['price'] * i['qty'] for i in items)\n```",
    "Please summarise the following meeting notes in five bullet points, keep the action "
    "items and the owners, and skip the small talk at the beginning.",
    "Notes: Maria will draft the Q3 budget by Friday; Tom checks the vendor contract (v2.3.1) "
    "and the renewal date; the team agreed to move the launch to 12 June at 10:30.",
    "The customer wrote from anna.kowalski@example.org and asked us to call back on "
    "+44 20 7946 0958 after 3 pm; her order number is 20240514-88231.",
    "Translate to German: 'Thank you for your patience. Your package left our warehouse in "
    "Rotterdam and should arrive within 3-5 business days.'",
    "What is the difference between a process and a thread in Python, and when should I use "
    "asyncio instead of threading? Give a short example for each.",
    "Our Kubernetes deployment keeps restarting. kubectl describe shows OOMKilled with a "
    "limit of 512Mi; the pod serves about 200 requests per second at peak.",
    "Draft a polite reply declining the invitation to speak at the conference in October, "
    "mention that we would be glad to join next year, and thank them for thinking of us.",
    "See https://docs.example.com/guides/getting-started#install for the install steps; "
    "the checksum of the tarball is 9b74c9897bac770ffc029102a200c5de.",
    "Compare these two SQL queries and tell me which one can use the index on "
    "(customer_id, created_at): SELECT * FROM orders WHERE customer_id = 42 ORDER BY "
    "created_at DESC LIMIT 20;",
]


def chat_text(size: int, seed: int = 7) -> str:
    """Deterministic chat-like text of about ``size`` characters."""
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < size:
        p = rng.choice(PARAGRAPHS)
        parts.append(p)
        total += len(p) + 2
    return "\n\n".join(parts)[:size]


def hostile_inputs(size: int) -> dict[str, str]:
    """Inputs that break naive regexes (quadratic backtracking) if a pattern is careless."""
    b64 = "".join(random.Random(1).choice("ABCDEFabcdef0123456789+/") for _ in range(size))
    return {
        "digits": "4" * size,
        "spaced digits": "1 " * (size // 2),
        "at-storm": "a@" * (size // 2),
        "one base64 token": b64,
        "dotted numbers": "1." * (size // 2),
        "colons": "a:" * (size // 2),
        "words ignore": "ignore previous " * (size // 16),
        "dashes and digits": "12-" * (size // 3),
    }


def copies(text: str, n: int) -> list[str]:
    """``n`` distinct string objects with the same content: the detectors cache per-text views
    by identity (for the run of detectors over one text), and a benchmark that scanned the same
    object again and again would measure that cache, not a new request."""
    return ["".join((text[:1], text[1:])) for _ in range(n)]


def measure(fn: Callable[[str], object], text: str, rounds: int) -> tuple[float, float]:
    """(median, p99) in microseconds of ``fn`` over fresh copies of ``text``."""
    warm = min(20, rounds)
    inputs = copies(text, rounds + warm)
    for t in inputs[:warm]:
        fn(t)
    samples = []
    for t in inputs[warm:]:
        t0 = time.perf_counter_ns()
        fn(t)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def measure_prepared(fn: Callable[[str], object], text: str, rounds: int) -> tuple[float, float]:
    """Like :func:`measure`, with the shared views computed before the clock starts."""
    inputs = copies(text, rounds)
    samples = []
    for t in inputs:
        _ = prepare(t).words
        t0 = time.perf_counter_ns()
        fn(t)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    config = all_detectors_config()
    config["custom"] = [
        {"name": "project_codes", "regex": r"\bPRJ-\d{4}\b"},
        {"name": "codenames", "keywords": ["falcon", "blue harbor", "nightjar"]},
    ]
    detectors = build_detectors(config)
    results: dict[str, dict[str, float]] = {}

    print(f"{'input':<28} {'size':>7} {'findings':>8} {'p50 µs':>9} {'p99 µs':>9}")
    for label, size in (("chat 4 KB", 4096), ("chat 64 KB", 65536)):
        text = chat_text(size)
        n = len(scan_all(detectors, text))
        p50, p99 = measure(lambda t: scan_all(detectors, t), text, args.rounds)
        results[label] = {"p50_us": p50, "p99_us": p99, "findings": n}
        print(f"{label:<28} {len(text):>7} {n:>8} {p50:>9.1f} {p99:>9.1f}")
        findings = scan_all(detectors, text)
        p50, p99 = measure(lambda t, f=findings: redact(t, f, numbering={}), text, args.rounds)
        results[f"{label} redact"] = {"p50_us": p50, "p99_us": p99}
        print(f"{label + ' (redact only)':<28} {len(text):>7} {'':>8} {p50:>9.1f} {p99:>9.1f}")

    print("\nshared per-text views (prep.prepare, once per text for all detectors), p50 µs")
    small, large = chat_text(4096), chat_text(65536)
    a, _ = measure(lambda t: prepare(t).words, small, args.rounds)
    b, _ = measure(lambda t: prepare(t).words, large, max(20, args.rounds // 5))
    results["prepare"] = {"4k_p50_us": a, "64k_p50_us": b}
    print(f"  {'prepare':<26} {a:>9.1f} {b:>9.1f}")
    print("\nper detector, views already prepared, chat 4 KB / 64 KB (p50 µs)")
    for d in detectors:

        def warm_then_scan(t: str, d=d) -> None:
            d.scan(t)

        a, _ = measure_prepared(warm_then_scan, small, args.rounds)
        b, _ = measure_prepared(warm_then_scan, large, max(20, args.rounds // 5))
        results[f"detector {d.name}"] = {"4k_p50_us": a, "64k_p50_us": b}
        print(f"  {d.name:<26} {a:>9.1f} {b:>9.1f}")

    print("\nprompt_injection by method, chat 4 KB / 64 KB (p50 µs, views not prepared)")
    for method in ("rules", "model", "combined"):
        det = InjectionDetector(method=method)
        a, a99 = measure(det.scan, small, args.rounds)
        b, b99 = measure(det.scan, large, max(20, args.rounds // 5))
        results[f"prompt_injection {method}"] = {
            "4k_p50_us": a,
            "4k_p99_us": a99,
            "64k_p50_us": b,
            "64k_p99_us": b99,
        }
        print(f"  {method:<26} {a:>9.1f} {b:>9.1f}   (p99 {a99:.1f} / {b99:.1f})")

    print("\nhostile 64 KB inputs, all detectors (p50 / max ms)")
    for label, text in hostile_inputs(65536).items():
        samples = []
        for t in copies(text, 5):
            t0 = time.perf_counter()
            scan_all(detectors, t)
            samples.append((time.perf_counter() - t0) * 1000)
        results[f"hostile {label}"] = {"p50_ms": statistics.median(samples), "max_ms": max(samples)}
        print(f"  {label:<26} {statistics.median(samples):>9.2f} {max(samples):>9.2f}")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
