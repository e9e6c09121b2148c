"""The gateway's CPU time per request, per mode: a figure the rest of the machine barely moves.

Wall-clock latency on a shared 2-core machine swings ±10 % between runs, as much as the
differences worth finding (Responses against chat). CPU time charged to the gateway process
(user + system, all its threads, from ``/proc/<pid>/stat``) divided by the requests wrk
completed is steadier: other processes delay the gateway but do not add to its CPU time.
The modes are interleaved over several rounds (each gateway run right after the same run
against the fake directly, for the added p50), and the median per mode is reported with the
CPU figures' spread and the added p50, both also relative to the first mode.

Usage::

    .venv/bin/python bench/cpu.py --rounds 5 --duration 4 --modes chat,responses \\
        --concurrency 1,16 [--provider-kind openai] [--audit async] [--json out.json]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main(argv: list[str] | None = None) -> int:
    parser = bench.build_parser()
    parser.description = __doc__
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per mode")
    args = parser.parse_args(argv)
    args.start_gateway = True
    # The embedded mode's periodic roll-ups (every 30 s) are not per request: off here, so
    # they do not land in one mode's CPU figure and not another's.
    os.environ.setdefault("ODOCK_SCHEDULER", "false")
    wrk = shutil.which("wrk")
    if wrk is None:
        bench.log("cpu: wrk is not installed (apt-get install wrk)")
        return 2
    keys = [(mode, c) for mode in args.modes for c in args.concurrency]
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    added: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    rps: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    with bench.fake_upstream(args) as upstream, bench.local_gateway(args, upstream) as target:
        assert target.pid is not None
        direct = bench.Target("direct", upstream, "sk-fake", args.model)
        with tempfile.TemporaryDirectory(prefix="odock-cpu-") as scripts:
            script_dir = Path(scripts)
            for mode in args.modes:
                bench.preflight(target, mode)
                bench.run_wrk(wrk, target, mode, 1, args.warmup or 1, 1, "5s", script_dir)
            for round_no in range(args.rounds):
                for mode, c in keys:
                    wrk_args = (args.duration, args.threads, "5s", script_dir)
                    straight = bench.run_wrk(wrk, direct, mode, c, *wrk_args)
                    before = cpu_seconds(target.pid)
                    result = bench.run_wrk(wrk, target, mode, c, *wrk_args)
                    used = cpu_seconds(target.pid) - before
                    if result.errors or straight.errors or not result.requests:
                        raise SystemExit(f"cpu: {mode} c={c} had errors: {result}")
                    cpu[mode, c].append(used / result.requests * 1e6)
                    added[mode, c].append(result.latency_ms["50"] - straight.latency_ms["50"])
                    rps[mode, c].append(result.rps)
                    bench.log(
                        f"round {round_no + 1} {mode} c={c}: {cpu[mode, c][-1]:.0f} µs CPU/request,"
                        f" +p50 {added[mode, c][-1]:.3f} ms, {result.rps:.0f} rps"
                    )
    print(
        f"\n{'mode':<18} {'c':>3} {'CPU µs/req':>11} {'(min-max)':>11} {'vs first':>9}"
        f" {'+p50 ms':>8} {'vs first':>9} {'RPS':>7}"
    )
    report = {}
    for c in args.concurrency:
        base_mode = args.modes[0]
        base_cpu = statistics.median(cpu[base_mode, c])
        base_added = statistics.median(added[base_mode, c])
        for mode in args.modes:
            med_cpu = statistics.median(cpu[mode, c])
            med_added = statistics.median(added[mode, c])
            report[f"{mode} c={c}"] = {
                "cpu_us": cpu[mode, c],
                "added_p50_ms": added[mode, c],
                "rps": rps[mode, c],
            }
            spread = f"{min(cpu[mode, c]):.0f}-{max(cpu[mode, c]):.0f}"
            print(
                f"{mode:<18} {c:>3} {med_cpu:>11.0f} {spread:>11} "
                f"{(med_cpu / base_cpu - 1) * 100:>+8.1f}% {med_added:>8.3f} "
                f"{(med_added / base_added - 1) * 100:>+8.1f}% "
                f"{statistics.median(rps[mode, c]):>7.0f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps({"config": str(vars(args)), "modes": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
