"""Tamper evidence for the audit log: hash chains, signed checkpoints, verification.

Every record belongs to a chain — one per writer process and organisation, so a
retention run can remove an organisation's old segments without touching anyone else's —
and carries its sequence number there, the previous record's hash and its own hash over a
canonical form of all its fields. A writer seals its chains periodically into an
``AuditCheckpoint`` signed with Ed25519: someone who can edit the database but not read
the signing key cannot rewrite a sealed segment and re-seal it. ``chain_verify`` walks
every chain from the stored rows and names the first record that does not add up.

The canonical form is computed from the values as the database returns them, so a record
hashes the same when written and when re-read: datetimes as UTC ISO strings with
microseconds, money as a 12-decimal string, IP addresses compressed, JSON with sorted keys.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
COST_QUANTUM = Decimal("0.000000000001")  # the column's 12 decimal places

# Every stored field of a record except ``hash`` itself, in no particular order (the
# canonical JSON sorts keys).
HASHED_FIELDS = (
    "request_id",
    "created_at",
    "organization_id",
    "team_id",
    "project_id",
    "key_id",
    "key_prefix",
    "user_id",
    "end_user",
    "endpoint",
    "model_requested",
    "model_served",
    "provider",
    "deployment",
    "stream",
    "status_code",
    "error_code",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "usage_estimated",
    "cost_usd",
    "latency_ms",
    "upstream_ms",
    "overhead_ms",
    "ttft_ms",
    "client_disconnected",
    "client_ip",
    "user_agent",
    "decisions",
    "attempts",
    "findings",
    "finding_types",
    "content",
    "chain",
    "seq",
    "prev_hash",
)


def _utc_text(value: datetime | float) -> str:
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _cost_text(value: Any) -> str:
    return format(Decimal(value).quantize(COST_QUANTUM), "f")


def _ip_text(value: Any) -> str | None:
    return None if value in (None, "") else ipaddress.ip_address(value).compressed


def _plain(value: Any) -> Any:
    """Tuples become lists, as they do in a JSON column."""
    return orjson.loads(orjson.dumps(value))


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers, from a writer's dict or a database row's values."""
    values = {name: record.get(name) for name in HASHED_FIELDS}
    if not values["end_user"]:
        # Added later: records without an end user hash as they did before the column.
        del values["end_user"]
    values["created_at"] = _utc_text(values["created_at"])
    values["cost_usd"] = _cost_text(values["cost_usd"] or 0)
    values["client_ip"] = _ip_text(values["client_ip"])
    for name in ("decisions", "attempts", "findings", "content"):
        values[name] = _plain(values[name])
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


# --- signing --------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _private_key(secret: str) -> Ed25519PrivateKey:
    """Any secret string works: the Ed25519 seed is derived from it."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(secret.encode()).digest())


def _signing_secret() -> str:
    from django.conf import settings

    return settings.ODOCK_AUDIT_SIGNING_KEY


def public_key() -> Ed25519PublicKey:
    return _private_key(_signing_secret()).public_key()


def checkpoint_payload(checkpoint: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "chain": checkpoint["chain"],
            "organization_id": checkpoint["organization_id"],
            "first_seq": checkpoint["first_seq"],
            "last_seq": checkpoint["last_seq"],
            "first_prev_hash": checkpoint["first_prev_hash"],
            "last_hash": checkpoint["last_hash"],
            "records": checkpoint["records"],
            "first_at": _utc_text(checkpoint["first_at"]),
            "last_at": _utc_text(checkpoint["last_at"]),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def checkpoint_sign(checkpoint: Mapping[str, Any]) -> str:
    signature = _private_key(_signing_secret()).sign(checkpoint_payload(checkpoint))
    return base64.b64encode(signature).decode()


def checkpoint_signature_ok(checkpoint: Mapping[str, Any]) -> bool:
    try:
        public_key().verify(
            base64.b64decode(checkpoint["signature"]), checkpoint_payload(checkpoint)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# --- the writer's side ------------------------------------------------------------------


@dataclass(slots=True)
class _Segment:
    """The records of one chain since its last checkpoint."""

    first_seq: int
    first_prev_hash: str
    first_at: float
    last_at: float
    count: int = 0


@dataclass
class ChainHeads:
    """A writer's chains: where each one ends, and what is not sealed yet.

    Used by one thread only (the writer's)."""

    writer_id: str
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    open_segments: dict[str, _Segment] = field(default_factory=dict)
    organization: dict[str, int | None] = field(default_factory=dict)

    def chain_of(self, organization_id: int | None) -> str:
        return f"{self.writer_id}:{organization_id or 0}"

    def link(self, record: dict[str, Any]) -> None:
        """Give the record its place in its chain and its hash (in place)."""
        chain = self.chain_of(record.get("organization_id"))
        seq, prev = self.heads.get(chain, (0, GENESIS))
        seq += 1
        record["chain"], record["seq"], record["prev_hash"] = chain, seq, prev
        record["hash"] = digest = record_hash(record)
        self.heads[chain] = (seq, digest)
        segment = self.open_segments.get(chain)
        if segment is None:
            created = record["created_at"]
            segment = self.open_segments[chain] = _Segment(seq, prev, created, created)
            self.organization[chain] = record.get("organization_id")
        segment.count += 1
        segment.first_at = min(segment.first_at, record["created_at"])
        segment.last_at = max(segment.last_at, record["created_at"])

    def follow(self, record: Mapping[str, Any]) -> None:
        """Note a record another ``ChainHeads`` linked (its chain fields set), in its
        chain's order: what a shipper that seals only what the database has keeps."""
        chain, seq, created = record["chain"], record["seq"], record["created_at"]
        self.heads[chain] = (seq, record["hash"])
        segment = self.open_segments.get(chain)
        if segment is None:
            segment = self.open_segments[chain] = _Segment(
                seq, record["prev_hash"], created, created
            )
            self.organization[chain] = record.get("organization_id")
        segment.count += 1
        segment.first_at = min(segment.first_at, created)
        segment.last_at = max(segment.last_at, created)

    def seal(self) -> list[dict[str, Any]]:
        """Signed checkpoints for every chain with unsealed records; they start anew."""
        sealed_at = datetime.now(UTC)
        checkpoints = []
        for chain, segment in self.open_segments.items():
            last_seq, last_hash = self.heads[chain]
            checkpoint = {
                "chain": chain,
                "organization_id": self.organization[chain],
                "first_seq": segment.first_seq,
                "last_seq": last_seq,
                "first_prev_hash": segment.first_prev_hash,
                "last_hash": last_hash,
                "records": segment.count,
                "first_at": datetime.fromtimestamp(segment.first_at, UTC),
                "last_at": datetime.fromtimestamp(segment.last_at, UTC),
                "sealed_at": sealed_at,
            }
            checkpoint["signature"] = checkpoint_sign(checkpoint)
            checkpoints.append(checkpoint)
        self.open_segments.clear()
        return checkpoints


def chain_seal_tail(chain: str) -> dict[str, Any] | None:
    """Seal a chain whose writer is gone: a signed checkpoint over the records stored after
    its last checkpoint, up to the first one that does not add up (left to
    ``chain_verify`` to name). The saved checkpoint, or None when there was nothing to
    seal. Only for a chain no live writer extends (the caller holds the dead writer's
    spool lock)."""
    from apps.audit.models import AuditCheckpoint

    last = AuditCheckpoint.objects.filter(chain=chain).order_by("-last_seq").first()
    seq, prev = (last.last_seq, last.last_hash) if last is not None else (0, GENESIS)
    first_seq, first_prev, count = seq + 1, prev, 0
    organization_id, first_at, last_at = None, None, None
    for row in _rows(chain, after=seq):
        if row["seq"] != seq + 1 or row["prev_hash"] != prev or record_hash(row) != row["hash"]:
            break
        seq, prev, count = row["seq"], row["hash"], count + 1
        organization_id = row["organization_id"]
        created = row["created_at"]  # not in sequence order: requests finish out of order
        first_at = min(first_at, created) if first_at else created
        last_at = max(last_at, created) if last_at else created
    if not count:
        return None
    checkpoint = {
        "chain": chain,
        "organization_id": organization_id,
        "first_seq": first_seq,
        "last_seq": seq,
        "first_prev_hash": first_prev,
        "last_hash": prev,
        "records": count,
        "first_at": first_at,
        "last_at": last_at,
        "sealed_at": datetime.now(UTC),
    }
    checkpoint["signature"] = checkpoint_sign(checkpoint)
    AuditCheckpoint.objects.bulk_create([AuditCheckpoint(**checkpoint)], ignore_conflicts=True)
    return checkpoint


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnsealedTail:
    """Records after a chain's last checkpoint. Nothing vouches for them yet: deleting them
    cannot be detected. A live writer seals its tail within ``ODOCK_AUDIT_SEAL_SECONDS``;
    an old one belongs to a writer that died and was not adopted (yet)."""

    chain: str
    first_seq: int
    last_seq: int
    newest_at: datetime

    def describe(self) -> str:
        return (
            f"{self.chain}: records #{self.first_seq}–#{self.last_seq} not sealed "
            f"(newest {self.newest_at.isoformat(timespec='seconds')})"
        )


@dataclass
class VerifyReport:
    ok: bool = True
    chains: int = 0
    records: int = 0
    checkpoints: int = 0
    purged_segments: int = 0
    unsealed: int = 0  # records after their chain's last checkpoint (not yet sealed)
    unsealed_tails: list[UnsealedTail] = field(default_factory=list)
    first_broken: str | None = None  # request id (or checkpoint) where it stops adding up
    reason: str = ""

    def fail(self, where: str, reason: str) -> None:
        if self.ok:
            self.ok, self.first_broken, self.reason = False, where, reason

    def summary(self) -> str:
        head = (
            f"{self.records} records in {self.chains} chains, {self.checkpoints} checkpoints "
            f"({self.purged_segments} purged segments), {self.unsealed} not sealed yet"
        )
        tails = "".join(f"\n  {tail.describe()}" for tail in self.unsealed_tails)
        if self.ok:
            return f"OK: {head}{tails}"
        return f"BROKEN at {self.first_broken}: {self.reason}\n({head}){tails}"


_ROW_FIELDS = (*HASHED_FIELDS, "hash", "id")
CHECKPOINT_FIELDS = (
    "chain",
    "organization_id",
    "first_seq",
    "last_seq",
    "first_prev_hash",
    "last_hash",
    "records",
    "first_at",
    "last_at",
    "signature",
)


def _rows(chain: str, after: int = 0, batch: int = 2000) -> Iterator[dict[str, Any]]:
    """The chain's records after sequence number ``after``, in order."""
    from apps.audit.models import RequestLog

    while True:
        qs = RequestLog.objects.filter(chain=chain, seq__gt=after).order_by("seq")
        rows = list(qs.values(*_ROW_FIELDS)[:batch])
        if not rows:
            return
        yield from rows
        after = rows[-1]["seq"]


def _verify_chain(chain: str, checkpoints: list[Any], report: VerifyReport) -> None:
    expected_seq, prev = 1, GENESIS
    by_last_seq = {}
    for cp in checkpoints:
        if not checkpoint_signature_ok({f: getattr(cp, f) for f in CHECKPOINT_FIELDS}):
            report.fail(f"checkpoint {cp}", "signature does not verify")
            return
        report.checkpoints += 1
        if cp.purged_at is not None:
            # Records removed by retention: the chain resumes after the purged segment.
            if cp.first_seq != expected_seq or cp.first_prev_hash != prev:
                report.fail(f"checkpoint {cp}", "purged segment does not join the chain")
                return
            report.purged_segments += 1
            expected_seq, prev = cp.last_seq + 1, cp.last_hash
            continue
        by_last_seq[cp.last_seq] = cp
    sealed_up_to = max((cp.last_seq for cp in by_last_seq.values()), default=expected_seq - 1)
    newest: datetime | None = None
    for row in _rows(chain):
        if row["seq"] < expected_seq:
            continue  # inside a purged segment: only possible if retention failed midway
        where = f"request {row['request_id']} ({chain} #{row['seq']})"
        if row["seq"] != expected_seq:
            report.fail(where, f"records #{expected_seq}–#{row['seq'] - 1} are missing")
            return
        if row["prev_hash"] != prev:
            report.fail(where, "does not link to the previous record")
            return
        if record_hash(row) != row["hash"]:
            report.fail(where, "content does not match its hash (edited)")
            return
        checkpoint = by_last_seq.get(row["seq"])
        if checkpoint is not None and checkpoint.last_hash != row["hash"]:
            report.fail(where, "does not match its signed checkpoint")
            return
        report.records += 1
        if row["seq"] > sealed_up_to:
            report.unsealed += 1
            newest = max(newest, row["created_at"]) if newest else row["created_at"]
        expected_seq, prev = row["seq"] + 1, row["hash"]
    if expected_seq - 1 < sealed_up_to:
        report.fail(f"chain {chain}", f"sealed records #{expected_seq}–#{sealed_up_to} are missing")
    elif newest is not None:
        tail = UnsealedTail(chain, sealed_up_to + 1, expected_seq - 1, newest)
        report.unsealed_tails.append(tail)


def chain_verify(*, organization_id: int | None = None) -> VerifyReport:
    """Walk every chain (or one organisation's) and check links, hashes and checkpoints.

    Records written outside the audit writer (no chain) are reported as a failure: the log
    cannot vouch for them."""
    from apps.audit.models import AuditCheckpoint, RequestLog

    report = VerifyReport()
    records = RequestLog.objects.all()
    checkpoints = AuditCheckpoint.objects.all()
    if organization_id is not None:
        records = records.filter(organization_id=organization_id)
        checkpoints = checkpoints.filter(organization_id=organization_id)
    unchained = records.filter(chain="").values_list("request_id", flat=True).first()
    if unchained is not None:
        report.fail(f"request {unchained}", "written outside the audit writer (no chain)")
    by_chain: dict[str, list[Any]] = {}
    for cp in checkpoints.order_by("chain", "first_seq"):
        by_chain.setdefault(cp.chain, []).append(cp)
    chains = set(by_chain) | set(
        records.exclude(chain="").values_list("chain", flat=True).distinct()
    )
    for chain in sorted(chains):
        report.chains += 1
        _verify_chain(chain, by_chain.get(chain, []), report)
        if not report.ok:
            break
    return report
