"""The gateway's CPU time per request, per mode: a figure the rest of the machine barely moves.

Wall-clock latency on a shared 2-core machine swings ±10 % between runs, as much as the
differences worth finding (Responses against chat). CPU time charged to the gateway process
(user + system, all its threads, from ``/proc/<pid>/stat``) divided by the requests wrk
completed is steadier: other processes delay the gateway but do not add to its CPU time.
The modes are interleaved over several rounds, and the median per mode is reported with
its spread.

Usage::

    .venv/bin/python bench/cpu.py --rounds 5 --duration 4 --modes chat,responses \\
        [--provider-kind openai] [--audit async] [--governance none] [--json out.json]
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
    wrk = shutil.which("wrk")
    if wrk is None:
        bench.log("cpu: wrk is not installed (apt-get install wrk)")
        return 2
    samples: dict[str, list[float]] = {mode: [] for mode in args.modes}
    with bench.fake_upstream(args) as upstream, bench.local_gateway(args, upstream) as target:
        assert target.pid is not None
        with tempfile.TemporaryDirectory(prefix="odock-cpu-") as scripts:
            script_dir = Path(scripts)
            for mode in args.modes:
                bench.preflight(target, mode)
                bench.run_wrk(wrk, target, mode, 1, args.warmup or 1, 1, "5s", script_dir)
            for round_no in range(args.rounds):
                for mode in args.modes:
                    before = cpu_seconds(target.pid)
                    result = bench.run_wrk(wrk, target, mode, 1, args.duration, 1, "5s", script_dir)
                    used = cpu_seconds(target.pid) - before
                    if result.errors or not result.requests:
                        raise SystemExit(f"cpu: {mode} had errors: {result}")
                    samples[mode].append(used / result.requests * 1e6)
                    bench.log(
                        f"round {round_no + 1} {mode}: {samples[mode][-1]:.0f} µs CPU/request "
                        f"({result.requests} requests)"
                    )
    base = statistics.median(samples[args.modes[0]])
    print(f"\n{'mode':<18} {'median µs':>10} {'min':>6} {'max':>6} {'vs ' + args.modes[0]:>10}")
    report = {}
    for mode, values in samples.items():
        median = statistics.median(values)
        report[mode] = {"median_us": median, "samples_us": values}
        print(
            f"{mode:<18} {median:>10.0f} {min(values):>6.0f} {max(values):>6.0f} "
            f"{(median / base - 1) * 100:>+9.1f}%"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"config": str(vars(args)), "modes": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
