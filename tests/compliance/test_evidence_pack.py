"""Evidence packs: built by the Celery task (eager here: no REDIS_URL) from one
organisation's records and changes for a period; the PDF's text carries the expected
counts, the CSV/JSONL files the rows behind them; downloads are for staff only."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.urls import reverse
from pypdf import PdfReader

from apps.audit.chain import ChainHeads, chain_verify
from apps.audit.models import RequestLog
from apps.audit.writer import prepare, write_batch
from apps.compliance.models import ConfigChange, EvidencePack, PackStatus
from apps.compliance.services import (
    evidence_pack_build,
    evidence_pack_rebuild,
    evidence_pack_request,
)
from apps.identity.models import Membership, Role
from apps.keys.services import IssuedKey
from apps.tenancy.models import Organization
from tests.factories import (
    audit_record,
    key_create,
    org_create,
    project_create,
    provider_create,
    request_log_create,
    team_create,
)

PERIOD = (date(2026, 1, 1), date(2026, 1, 31))
_ids = itertools.count(1)


def at(day: int, hour: int = 12, month: int = 1) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def record(
    issued: IssuedKey,
    *,
    when: datetime,
    status: int = 200,
    error_code: str = "",
    finding_types: str = "",
    model: str = "gpt-4o-mini",
    cost: str = "0",
    endpoint: str = "chat.completions",
) -> RequestLog:
    """A record as the gateway writes it for a key (with its owner), outside the writer."""
    key = issued.key
    project = key.project
    return RequestLog.objects.create(
        request_id=f"req-ev-{next(_ids)}",
        created_at=when,
        organization_id=project.team.organization_id,
        team_id=project.team_id,
        project_id=project.pk,
        key_id=key.pk,
        key_prefix=key.prefix,
        user_id=key.owner_id,
        endpoint=endpoint,
        model_requested=model,
        model_served=model if status < 400 else "",
        status_code=status,
        error_code=error_code,
        finding_types=finding_types,
        findings=[{"detector": t, "action": "redact"} for t in finding_types.split(",") if t],
        cost_usd=Decimal(cost),
    )


@dataclass
class Seeded:
    org: Organization
    alice: User
    key1: IssuedKey
    key2: IssuedKey
    in_period: set[str]


@pytest.fixture
def seeded(db) -> Seeded:
    alice = User.objects.create_user("alice")
    org = org_create("acme")
    project = project_create(team_create(org, "search"), "assistant")
    key1 = key_create(project, "assistant-prod", owner=alice)
    key2 = key_create(project, "batch-jobs")
    provider_create("http://127.0.0.1:9001/v1", name="openai-main")
    # Every change so far happened in the period: its org's five and one platform-wide.
    ConfigChange.objects.update(created_at=at(3))
    other = org_create("globex")  # another organisation's change in the period: not shown
    ConfigChange.objects.filter(organization_id=other.pk).update(created_at=at(4))
    org.display_name = "Acme"  # after the period
    org.save()

    rows = [
        record(key1, when=at(5), cost="0.10", finding_types="pii_email"),
        record(key1, when=at(6), cost="0.10", finding_types="pii_email,prompt_injection"),
        record(key1, when=at(7), cost="0.10"),
        record(key1, when=at(8), status=429, error_code="rate_limited"),
        record(key1, when=at(9), status=429, error_code="rate_limited"),
        request_log_create(key2.key, "0.25", created_at=at(10), model_requested="gpt-4o"),
        request_log_create(key2.key, "0.25", created_at=at(31, 23), model_requested="gpt-4o"),
        record(key2, when=at(11), status=403, error_code="model_not_allowed", model="o1"),
    ]
    # Outside the period, or another organisation's: in no count.
    record(key1, when=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), cost="9")
    record(key1, when=at(1, 0, month=2), status=429, error_code="rate_limited")
    other_key = key_create(project_create(team_create(other)))
    record(other_key, when=at(5), status=401, error_code="invalid_api_key")
    return Seeded(org, alice, key1, key2, {r.request_id for r in rows})


def build(django_capture_on_commit_callbacks, org: Organization, **kwargs) -> EvidencePack:
    with django_capture_on_commit_callbacks(execute=True):
        pack = evidence_pack_request(
            organization=org, period_start=PERIOD[0], period_end=PERIOD[1], **kwargs
        )
    pack.refresh_from_db()
    assert pack.status == PackStatus.DONE, pack.error
    return pack


def stored(pack: EvidencePack, name: str) -> bytes:
    entry = pack.file_entry(name)
    with default_storage.open(entry["path"], "rb") as f:
        return f.read()


def pdf_text(pack: EvidencePack) -> str:
    reader = PdfReader(io.BytesIO(stored(pack, "evidence.pdf")))
    text = " ".join(page.extract_text() for page in reader.pages)
    return re.sub(r"\s+", " ", text)


@pytest.mark.django_db
def test_pack_pdf_shows_the_periods_counts(seeded, admin_user, django_capture_on_commit_callbacks):
    pack = build(django_capture_on_commit_callbacks, seeded.org, requested_by=admin_user)
    text = pdf_text(pack)

    assert "Compliance evidence pack: acme" in text
    assert "Period: 2026-01-01 to 2026-01-31" in text
    assert "Requests: 8" in text
    assert "Refused requests: 3" in text
    assert "Cost: 0.800000 USD" in text
    # Who used which model: key (and its owner) -> model -> requests, refused, cost.
    key1 = f"assistant-prod ({seeded.key1.key.prefix}...) / user alice"
    assert f"{key1} gpt-4o-mini 5 2 0.300000" in text
    assert f"batch-jobs ({seeded.key2.key.prefix}...) gpt-4o 2 0 0.500000" in text
    assert "o1 1 1 0.000000" in text
    assert "No tool calls recorded." in text
    # Refusals by reason, most frequent first.
    assert "Status Error code Requests 429 rate_limited 2 403 model_not_allowed 1" in text
    assert "invalid_api_key" not in text  # another organisation's
    assert "Finding type Requests pii_email 2 prompt_injection 1" in text
    assert "Policy changes in the period: 6 (5 to this organisation, 1 platform-wide)" in text
    assert "tenancy.organization: acme" in text and "globex" not in text
    assert "providers.provider: openai-main" in text

    # The chain verification: these rows were written outside the audit writer.
    report = chain_verify(organization_id=seeded.org.pk)
    assert not report.ok
    assert "Audit chain verification: FAILED" in text
    for line in report.summary().splitlines():
        assert re.sub(r"\s+", " ", line) in text
    assert "written outside the audit writer (no chain)" in text

    assert pack.summary["refused"] == 3
    assert pack.summary["refusals"] == [[429, "rate_limited", 2], [403, "model_not_allowed", 1]]
    assert pack.summary["findings"] == [["pii_email", 2], ["prompt_injection", 1]]
    assert pack.summary["policy_changes"] == 6
    assert pack.requested_by == admin_user and pack.finished_at is not None


@pytest.mark.django_db
def test_pack_data_files_hold_the_rows_behind_the_pdf(seeded, django_capture_on_commit_callbacks):
    pack = build(django_capture_on_commit_callbacks, seeded.org)
    names = [f["name"] for f in pack.files]
    assert names == ["evidence.pdf", "records.csv", "records.jsonl", "changes.csv", "changes.jsonl"]
    for entry in pack.files:
        data = stored(pack, entry["name"])
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
        assert entry["path"].startswith(f"evidence/org-{seeded.org.pk}/pack-{pack.pk}/")

    records = list(csv.DictReader(io.StringIO(stored(pack, "records.csv").decode())))
    assert len(records) == 8 == pack.file_entry("records.csv")["rows"]
    assert {r["request_id"] for r in records} == seeded.in_period
    assert sum(Decimal(r["cost_usd"]) for r in records) == Decimal("0.80")
    assert "content" not in records[0]  # prompts stay out of the pack
    findings = next(r for r in records if r["finding_types"] == "pii_email")["findings"]
    assert json.loads(findings) == [{"action": "redact", "detector": "pii_email"}]

    lines = stored(pack, "records.jsonl").decode().splitlines()
    assert len(lines) == 8 == pack.file_entry("records.jsonl")["rows"]
    assert {json.loads(line)["request_id"] for line in lines} == seeded.in_period
    assert json.loads(lines[0])["cost_usd"] == "0.100000000000"

    changes = list(csv.DictReader(io.StringIO(stored(pack, "changes.csv").decode())))
    assert len(changes) == 6 == pack.file_entry("changes.csv")["rows"]
    assert {c["object_type"] for c in changes} == {
        "tenancy.organization",
        "tenancy.team",
        "tenancy.project",
        "keys.virtualkey",
        "providers.provider",
    }
    assert all(c["action"] == "create" and c["actor"] == "system" for c in changes)
    jsonl = [json.loads(line) for line in stored(pack, "changes.jsonl").decode().splitlines()]
    assert len(jsonl) == 6
    key_change = next(c for c in jsonl if c["object_repr"].startswith("assistant-prod"))
    assert key_change["changes"]["digest"] == "changed"
    assert seeded.key1.key.digest not in stored(pack, "changes.csv").decode()


def writer_records(issued: IssuedKey, count: int) -> None:
    """Records through the audit writer's own path: linked into a chain, then inserted."""
    key = issued.key
    heads = ChainHeads(writer_id="w-test")
    batch = []
    for i in range(count):
        rec = audit_record(key, f"req-chained-{i}", at(10 + i).timestamp())
        prepare(rec)
        heads.link(rec)
        batch.append(rec)
    write_batch(batch)


@pytest.mark.django_db
def test_pack_of_an_org_whose_log_verifies_shows_ok(seeded, django_capture_on_commit_callbacks):
    clean = org_create("clean")
    writer_records(key_create(project_create(team_create(clean))), 3)
    report = chain_verify(organization_id=clean.pk)
    assert report.ok and report.records == 3

    pack = build(django_capture_on_commit_callbacks, clean)
    text = pdf_text(pack)
    assert "Audit chain verification: OK" in text
    assert "OK: 3 records in 1 chains, 0 checkpoints (0 purged segments), 3 not sealed yet" in text
    assert "Requests: 3" in text and "Refused requests: 0" in text
    assert "No guardrail findings recorded." in text
    assert pack.summary["verification_ok"] is True


@pytest.mark.django_db
def test_rerunning_the_task_is_idempotent(seeded, django_capture_on_commit_callbacks):
    from apps.compliance.tasks import evidence_pack_build as task

    pack = build(django_capture_on_commit_callbacks, seeded.org)
    files = pack.files
    # A second delivery of the same task (acks_late) finds it done and does nothing.
    assert task.delay(pack.pk).get() is None
    assert evidence_pack_build(pack_id=pack.pk) is None
    pack.refresh_from_db()
    assert pack.files == files

    # A rebuild replaces the files in place: same names, no "records_x7Gq.csv" beside them.
    record(seeded.key1, when=at(20), status=429, error_code="rate_limited")
    with django_capture_on_commit_callbacks(execute=True):
        assert evidence_pack_rebuild(pack=pack)
    pack.refresh_from_db()
    assert pack.status == PackStatus.DONE
    assert [f["path"] for f in pack.files] == [f["path"] for f in files]
    _dirs, stored_names = default_storage.listdir(f"evidence/org-{seeded.org.pk}/pack-{pack.pk}")
    assert sorted(stored_names) == sorted(f["name"] for f in files)
    assert "Refused requests: 4" in pdf_text(pack)
    assert pack.file_entry("records.csv")["rows"] == 9


@pytest.mark.django_db
def test_admin_builds_lists_and_serves_a_pack(
    admin_client, seeded, django_capture_on_commit_callbacks
):
    add = reverse("admin:compliance_evidencepack_add")
    page = admin_client.get(add)
    assert page.status_code == 200 and "Build evidence pack" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            add,
            {
                "organization": seeded.org.pk,
                "period_start": "2026-01-01",
                "period_end": "2026-01-31",
            },
        )
    assert response.status_code == 302
    pack = EvidencePack.objects.get()
    assert pack.status == PackStatus.DONE and pack.requested_by.username == "admin"

    html = admin_client.get(reverse("admin:compliance_evidencepack_changelist")).content.decode()
    url = reverse("admin:compliance_evidencepack_download", args=[pack.pk, "evidence.pdf"])
    assert url in html and "Done" in html
    response = admin_client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="evidence.pdf"')
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    csv_url = reverse("admin:compliance_evidencepack_download", args=[pack.pk, "records.csv"])
    assert len(b"".join(admin_client.get(csv_url).streaming_content).splitlines()) == 9
    missing = reverse("admin:compliance_evidencepack_download", args=[pack.pk, "..%2Fsecret_key"])
    assert admin_client.get(missing).status_code == 404

    bad = admin_client.post(
        add,
        {"organization": seeded.org.pk, "period_start": "2026-02-01", "period_end": "2026-01-01"},
    )
    assert bad.status_code == 200 and EvidencePack.objects.count() == 1


@pytest.mark.django_db
def test_only_auditors_of_its_organisation_can_download(
    client, seeded, django_capture_on_commit_callbacks
):
    pack = build(django_capture_on_commit_callbacks, seeded.org)
    url = reverse("admin:compliance_evidencepack_download", args=[pack.pk, "records.csv"])

    response = client.get(url)  # anonymous
    assert response.status_code == 302 and "/admin/login/" in response["Location"]

    client.force_login(seeded.alice)  # a user without an administrative role
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert b"request_id" not in response.content

    bob = User.objects.create_user("bob", is_staff=True)
    other = Organization.objects.create(name="globex-evidence")
    Membership.objects.create(user=bob, role=Role.AUDITOR, organization=other)
    client.force_login(bob)  # an auditor, of another organisation: no such pack for him
    response = client.get(url)
    assert response.status_code == 404 and b"request_id" not in response.content
    Membership.objects.create(user=bob, role=Role.FINANCE, organization=seeded.org)
    assert client.get(url).status_code == 404  # finance has no audit capability

    Membership.objects.create(user=bob, role=Role.AUDITOR, organization=seeded.org)
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"id,request_id,")


@pytest.mark.django_db
def test_a_failed_build_is_recorded_and_can_be_rebuilt(
    seeded, settings, tmp_path, django_capture_on_commit_callbacks
):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    settings.MEDIA_ROOT = blocked  # the storage cannot create its folders under a file
    with django_capture_on_commit_callbacks(execute=True):
        pack = evidence_pack_request(
            organization=seeded.org, period_start=PERIOD[0], period_end=PERIOD[1]
        )
    pack.refresh_from_db()
    assert pack.status == PackStatus.FAILED and pack.finished_at is not None
    assert "Error" in pack.error and pack.files == []

    settings.MEDIA_ROOT = tmp_path / "media-ok"
    with django_capture_on_commit_callbacks(execute=True):
        assert evidence_pack_rebuild(pack=pack)
    pack.refresh_from_db()
    assert (pack.status, pack.error) == (PackStatus.DONE, "")
    assert "Refused requests: 3" in pdf_text(pack)


def test_the_build_task_runs_on_the_reports_queue():
    from odock.celery import app

    assert app.conf.task_routes["compliance.evidence_pack_build"] == {"queue": "reports"}
    assert "reports" in {queue.name for queue in app.conf.task_queues}
    assert "compliance.evidence_pack_build" in app.tasks
