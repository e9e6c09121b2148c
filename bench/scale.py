"""Configuration at enterprise scale: how the gateway copes with 100,000 keys.

Seeds a dedicated PostgreSQL database in bulk (``--keys`` keys over ``--teams`` teams, each
team with a budget and an RPM limit, ``--models`` models on one fake upstream; bulk_create,
never the admin), then measures:

- the snapshot's full build: time and the RSS it adds (in this process);
- a fresh gateway process: time from its start to its first answered request;
- a revocation's time to effect on two running gateway processes (a probe with the
  revoked key every 50 ms on each, until it gets 401);
- the probe's latency (p50/p99/max) before and while 20 admin changes are applied.

``--keys 10000,30000,100000`` draws the curve (reseeding for each) and extrapolates
1,000,000 linearly from the last two points. Needs PostgreSQL and Redis on loopback::

    .venv/bin/python bench/scale.py --keys 100000
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/odock_scale_bench"
PROBE_INTERVAL = 0.05


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used: start-up cost, whatever else loads the box."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_create(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


# --------------------------------------------------------------------------- seeding


def seed(*, keys: int, teams: int, models: int, upstream: str) -> None:
    """Replace the governance rows with ``keys`` keys over ``teams`` teams (one project
    each, 10 organisations), a monthly budget and an RPM limit per team, ``models``
    models each deployed on the fake upstream."""
    from django.conf import settings
    from django.db import connection, transaction

    from apps.keys.models import VirtualKey
    from apps.keys.secrets import key_digest
    from apps.policies.models import Budget, RateLimit
    from apps.providers.models import Deployment, Model, Provider
    from apps.tenancy.models import Organization, Project, Team

    teams = min(teams, keys)
    pepper = settings.ODOCK_KEY_PEPPER
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE keys_virtualkey, tenancy_project, tenancy_team, tenancy_organization, "
            "policies_budget, policies_ratelimit, providers_deployment, providers_model, "
            "providers_provider, configlog_configchange RESTART IDENTITY CASCADE"
        )
    with transaction.atomic():
        provider = Provider.objects.create(name="scale-fake", kind="openai", api_base=upstream)
        model_rows = Model.objects.bulk_create(
            Model(
                name=f"model-{i:04d}",
                input_per_mtok=Decimal("0.15"),
                output_per_mtok=Decimal("0.60"),
            )
            for i in range(models)
        )
        Deployment.objects.bulk_create(
            Deployment(model=m, provider=provider, upstream_model="gpt-4o-mini") for m in model_rows
        )
        orgs = Organization.objects.bulk_create(
            Organization(name=f"org-{i}") for i in range(min(10, teams))
        )
        team_rows = Team.objects.bulk_create(
            (Team(organization=orgs[i % len(orgs)], name=f"team-{i:05d}") for i in range(teams)),
            batch_size=5000,
        )
        projects = Project.objects.bulk_create(
            (Project(team=t, name="default") for t in team_rows), batch_size=5000
        )
        Budget.objects.bulk_create(
            (Budget(team=t, limit_usd=Decimal("1000000"), period="monthly") for t in team_rows),
            batch_size=5000,
        )
        RateLimit.objects.bulk_create(
            (RateLimit(team=t, rpm=100_000_000) for t in team_rows), batch_size=5000
        )
        VirtualKey.objects.bulk_create(
            (
                VirtualKey(
                    project=projects[i % len(projects)],
                    name=f"key-{i}",
                    prefix=_secret(i)[:12],
                    digest=key_digest(_secret(i), pepper),
                )
                for i in range(keys)
            ),
            batch_size=5000,
        )
    from apps.core.models import config_version_bump

    with transaction.atomic():
        config_version_bump()


def _secret(i: int) -> str:
    return f"sk-odock-scale-{i:08d}"


def _seeded_keys() -> int:
    from apps.keys.models import VirtualKey

    return VirtualKey.objects.count()


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def fake_upstream() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.openai_server", "--no-validate", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


class Gateway:
    """One gateway process (uvicorn, uvloop, httptools: as in production)."""

    def __init__(self, env: dict[str, str]) -> None:
        from apps.core.serve import uvicorn_command

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            uvicorn_command(self.port),
            cwd=REPO_ROOT,
            env=env,
        )

    def first_answer(self, key: str, model: str, timeout: float = 180) -> float:
        """Seconds from the process start to its first 200 to a chat request."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"scale: the gateway exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if _chat(client, self.url, key, model).status_code == 200:
                        return time.monotonic() - self.started
                time.sleep(0.05)
        raise SystemExit("scale: the gateway never answered")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _chat(client, url: str, key: str, model: str):
    return client.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    )


class Probe(threading.Thread):
    """A request every 50 ms on one gateway, recording (sent at, status, latency)."""

    def __init__(self, url: str, key: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.model = url, key, model
        self.samples: list[tuple[float, int, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not self.halt.is_set():
                sent = time.monotonic()
                try:
                    status = _chat(client, self.url, self.key, self.model).status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((sent, status, time.monotonic() - sent))
                self.halt.wait(max(0.0, PROBE_INTERVAL - (time.monotonic() - sent)))

    def stop(self) -> None:
        self.halt.set()
        self.join(15)

    def latencies_ms(self, start: float, end: float) -> list[float]:
        return [lat * 1000 for sent, _s, lat in self.samples if start <= sent < end]

    def first_401_after(self, moment: float) -> float | None:
        for sent, status, lat in self.samples:
            if sent >= moment and status == 401:
                return sent + lat - moment
        return None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- measures


def measure_build() -> tuple[float, float, float]:
    """(seconds, MB the snapshot keeps, MB peak) of one full build, in a fresh process
    (in this one, memory freed by the seeding would be reused and hide the cost)."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure-build"],
        cwd=REPO_ROOT,
        env=os.environ,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-3]), float(out[-2]), float(out[-1])


def _measure_build_here() -> None:
    from apps.policies.compile import snapshot_compile

    gc.collect()
    before = _rss_mb()
    started = time.monotonic()
    snapshot = snapshot_compile()
    elapsed = time.monotonic() - started
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert len(snapshot.keys_by_digest) >= 1
    print(f"{elapsed:.3f} {_rss_mb() - before:.1f} {peak:.1f}")


def _changes(count: int, keys: int) -> list:
    """``count`` admin changes through the services' and models' own save paths."""
    from apps.keys.models import VirtualKey
    from apps.keys.services import key_issue, key_revoke
    from apps.policies.models import Budget
    from apps.tenancy.models import Team

    def revoke(i):
        return lambda: key_revoke(key=VirtualKey.objects.get(name=f"key-{(1000 + 37 * i) % keys}"))

    def budget(i):
        def change():
            b = Budget.objects.filter(team__name=f"team-{(2000 + 43 * i) % teams:05d}").first()
            b.limit_usd += 1
            b.save()

        return change

    def rename(i):
        def change():
            t = Team.objects.get(pk=1 + (3000 + 47 * i) % teams)
            t.name = f"renamed-{i}-{int(time.time())}"
            t.save()

        return change

    def create(i):
        def change():
            project = VirtualKey.objects.get(name=f"key-{(4000 + 41 * i) % keys}").project
            key_issue(project=project, name=f"new-{i}-{int(time.time() * 1000)}")

        return change

    teams = max(1, keys // 10)
    makers = (revoke, budget, rename, create)
    return [makers[i % len(makers)](i) for i in range(count)]


def run_point(args: argparse.Namespace, keys: int, upstream: str) -> dict[str, float]:
    from apps.keys.models import VirtualKey
    from apps.keys.services import key_revoke

    if not args.reuse or _seeded_keys() != keys:
        started = time.monotonic()
        seed(keys=keys, teams=max(1, keys // 10), models=args.models, upstream=upstream)
        print(f"  seeded {keys} keys in {time.monotonic() - started:.1f} s", flush=True)
    from apps.providers.models import Provider

    Provider.objects.filter(name="scale-fake").update(api_base=upstream)
    row: dict[str, float] = {"keys": keys}
    row["build_s"], row["snapshot_mb"], row["peak_mb"] = measure_build()
    print(f"  build {row['build_s']:.1f} s, +{row['snapshot_mb']:.0f} MB", flush=True)
    with tempfile.TemporaryDirectory(prefix="odock-scale-") as var:
        env = {
            **os.environ,
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "ODOCK_LOG_LEVEL": "WARNING",
            "ODOCK_AUDIT_SPOOL_DIR": str(Path(var) / "spool"),
            "ODOCK_SNAPSHOT_FILE": str(Path(var) / "snapshot"),
        }
        model = "model-0000"
        gateways = [Gateway(env)]
        try:
            row["first_answer_s"] = gateways[0].first_answer(_secret(0), model)
            row["first_answer_cpu_s"] = _cpu_seconds(gateways[0].proc.pid)
            row["gateway_rss_mb"] = _rss_mb(gateways[0].proc.pid)
            gateways.append(Gateway(env))
            gateways[1].first_answer(_secret(0), model)
            print(f"  first answer {row['first_answer_s']:.1f} s", flush=True)
            # Revocation on two live processes.
            victim = 7
            probes = [Probe(g.url, _secret(victim), model) for g in gateways]
            calm = [Probe(gateways[0].url, _secret(1), model)]
            for p in probes + calm:
                p.start()
            time.sleep(args.calm_seconds)
            calm_end = time.monotonic()
            revoked_at = time.monotonic()
            key_revoke(key=VirtualKey.objects.get(name=f"key-{victim}"))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(
                p.first_401_after(revoked_at) is None for p in probes
            ):
                time.sleep(0.05)
            effects = [p.first_401_after(revoked_at) for p in probes]
            row["revocation_s"] = max(e if e is not None else float("inf") for e in effects)
            print(f"  revocation {effects}", flush=True)
            # 20 changes while the calm probe keeps asking.
            changes_start = time.monotonic()
            for change in _changes(20, keys):
                change()
                time.sleep(args.change_gap)
            time.sleep(2)  # the last change is applied too
            changes_end = time.monotonic()
            for p in probes + calm:
                p.stop()
            quiet = calm[0].latencies_ms(0, calm_end)
            busy = calm[0].latencies_ms(changes_start, changes_end)
            row["p50_quiet_ms"], row["p99_quiet_ms"] = _pct(quiet, 0.5), _pct(quiet, 0.99)
            row["p50_changes_ms"], row["p99_changes_ms"] = _pct(busy, 0.5), _pct(busy, 0.99)
            row["max_changes_ms"] = max(busy) if busy else float("nan")
            bad = [s for _t, s, _l in calm[0].samples if s != 200]
            row["probe_errors"] = len(bad)
        finally:
            for g in gateways:
                g.stop()
    return row


COLUMNS = (
    ("keys", "keys", "{:.0f}"),
    ("build_s", "build s", "{:.1f}"),
    ("snapshot_mb", "+MB kept", "{:.0f}"),
    ("peak_mb", "peak MB", "{:.0f}"),
    ("first_answer_s", "1st answer s", "{:.1f}"),
    ("first_answer_cpu_s", "1st answer CPU s", "{:.1f}"),
    ("gateway_rss_mb", "gw RSS MB", "{:.0f}"),
    ("revocation_s", "revoke s", "{:.2f}"),
    ("p50_quiet_ms", "p50 quiet", "{:.1f}"),
    ("p99_quiet_ms", "p99 quiet", "{:.1f}"),
    ("p50_changes_ms", "p50 changes", "{:.1f}"),
    ("p99_changes_ms", "p99 changes", "{:.1f}"),
    ("max_changes_ms", "max changes", "{:.0f}"),
    ("probe_errors", "probe errors", "{:.0f}"),
)


def print_table(rows: list[dict[str, float]]) -> None:
    print("| " + " | ".join(title for _k, title, _f in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = [fmt.format(row[k]) if k in row else "" for k, _t, fmt in COLUMNS]
        print("| " + " | ".join(cells) + " |")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        estimate = {"keys": 1_000_000.0}
        for key in ("build_s", "snapshot_mb", "first_answer_s"):
            slope = (b[key] - a[key]) / (b["keys"] - a["keys"])
            estimate[key] = b[key] + slope * (1_000_000 - b["keys"])
        print(
            "| 1,000,000 (linear estimate) | {build_s:.0f} | {snapshot_mb:.0f} | | "
            "{first_answer_s:.0f} | | | | | | | | | |".format(**estimate)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="100000", help="comma-separated key counts")
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--measure-build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument(
        "--reuse", action="store_true", help="keep a seeded database of the right size"
    )
    parser.add_argument("--calm-seconds", type=float, default=5.0)
    parser.add_argument("--change-gap", type=float, default=0.5, help="seconds between changes")
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["REDIS_URL"] = args.redis_url
    if args.measure_build:
        import django

        django.setup()
        _measure_build_here()
        return
    _database_create(args.database_url)

    import django

    django.setup()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    rows = []
    with fake_upstream() as upstream:
        for keys in (int(k) for k in args.keys.split(",")):
            print(f"{keys} keys:", flush=True)
            rows.append(run_point(args, keys, upstream))
    print()
    print_table(rows)
    print(f"\nprobe every {PROBE_INTERVAL * 1000:.0f} ms; latencies in ms; one run")


if __name__ == "__main__":
    main()
