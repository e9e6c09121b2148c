"""odock_apply: content capture per level and audit retention per organisation."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from apps.audit.models import ContentCapture
from apps.policies.compile import snapshot_compile
from apps.tenancy.models import Organization
from tests.factories import odock_apply_text

pytestmark = pytest.mark.django_db

FILE = """
organizations:
  - name: acme
    audit_retention_days: 400
    capture: {mode: redacted, max_bytes: 4096}
    teams:
      - name: research
        projects:
          - name: lab
            capture: {mode: full}
            keys:
              - {name: k1, secret: sk-odock-capture-test-key-1}
          - name: quiet
            keys:
              - {name: k2, secret: sk-odock-capture-test-key-2}
"""


apply = odock_apply_text


def test_capture_and_retention_apply_idempotently_and_compile(tmp_path):
    apply(tmp_path, FILE)
    assert Organization.objects.get(name="acme").audit_retention_days == 400
    assert sorted(ContentCapture.objects.values_list("mode", "max_bytes")) == [
        ("full", 16384),
        ("redacted", 4096),
    ]
    assert "created 0, updated 0, deleted 0" in apply(tmp_path, FILE)
    keys = {k.identity.key_name: k for k in snapshot_compile().keys_by_digest.values()}
    assert (keys["k1"].capture_mode, keys["k1"].capture_max_bytes) == ("full", 16384)
    assert (keys["k2"].capture_mode, keys["k2"].capture_max_bytes) == ("redacted", 4096)

    out = apply(tmp_path, FILE.replace("            capture: {mode: full}\n", ""))
    assert "deleted 1" in out
    keys = {k.identity.key_name: k for k in snapshot_compile().keys_by_digest.values()}
    assert keys["k1"].capture_mode == "redacted"  # inherited from the organisation now


def test_bad_capture_is_refused_with_its_path(tmp_path):
    with pytest.raises(CommandError) as info:
        apply(tmp_path, FILE.replace("mode: full", "mode: everything"))
    assert "teams[0].projects[0].capture.mode" in str(info.value)
    assert not ContentCapture.objects.exists()
