"""An auditor (of acme), logged in over HTTP: acme's request records, change trail and
evidence packs, read-only; nothing of globex; no spend reports, no changes."""

from __future__ import annotations

from apps.compliance.models import EvidencePack
from apps.keys.models import VirtualKey
from tests.identity.admin.conftest import NOT_A_CHOICE, form_errors, url


def test_reads_its_records_and_trail(browser_for, world):
    browser = browser_for("auditor")
    log = browser.get(url("audit_requestlog_changelist")).text
    assert "req-search" in log and "req-ads" in log and "req-globex" not in log
    record = browser.get(url("audit_requestlog_change", world.logs["search"].pk))
    assert record.status_code == 200 and "req-search" in record.text
    other = browser.get(url("audit_requestlog_change", world.logs["globex"].pk))
    assert other.status_code == 302 and "req-globex" not in other.text
    export = browser.get(url("audit_requestlog_export"), format="jsonl").text
    assert "req-search" in export and "req-globex" not in export
    trail = browser.get(url("compliance_configchange_changelist")).text
    assert "acme" in trail and "globex" not in trail
    assert "globex-admin" not in trail  # the actor filter names no other organisation's people


def test_requests_evidence_for_its_organisation_only(browser_for, world):
    browser = browser_for("auditor")
    add = url("compliance_evidencepack_add")
    assert browser.autocomplete("compliance", "evidencepack", "organization") == {"acme"}
    refused = browser.post(
        add,
        {"organization": world.globex.pk, "period_start": "2026-01-01", "period_end": "2026-01-31"},
    )
    assert refused.status_code == 200 and NOT_A_CHOICE in refused.text
    assert not EvidencePack.objects.exists()
    ok = browser.post(
        add,
        {"organization": world.acme.pk, "period_start": "2026-01-01", "period_end": "2026-01-31"},
    )
    assert ok.status_code == 302, form_errors(ok.text)
    assert list(EvidencePack.objects.values_list("organization", flat=True)) == [world.acme.pk]


def test_changes_nothing(browser_for, world):
    browser = browser_for("auditor")
    index = browser.get("/admin/")
    assert index.status_code == 200 and "/admin/audit/requestlog/" in index.text
    assert "/admin/reports/" not in index.text
    assert browser.get(url("reports_spendreport_changelist")).status_code == 403
    page = browser.get(url("keys_virtualkey_change", world.search_key.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.text
    changelist = url("keys_virtualkey_changelist")
    assert "revoke_keys" not in browser.get(changelist).text  # no action it may not run
    browser.post(
        changelist,
        [("action", "revoke_keys"), ("_selected_action", str(world.search_key.pk)), ("index", "0")],
    )
    assert VirtualKey.objects.get(pk=world.search_key.pk).revoked_at is None
