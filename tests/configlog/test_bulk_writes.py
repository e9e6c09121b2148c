"""No bulk write in ``apps/`` skips the change log.

``QuerySet.update()``, ``bulk_create()`` and ``bulk_update()`` send no signals, so on a
model the gateway snapshot reads they would write no change-log row and bump no version:
every gateway process would keep serving the old rule (a revoked key working, a lowered
budget not enforced). Writes go through ``save()``/``delete()`` (services) instead. A
bulk update is allowed only of columns the snapshot never reads, named here. The check
reads ``Model.objects…`` chains; a queryset handed in (an admin action's) is not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

from django.apps import apps
from django.db.models.signals import post_save

APPS = Path(__file__).resolve().parents[2] / "apps"
BULK = {"update", "bulk_create", "bulk_update"}
# Model class name -> columns a bulk ``update()`` may write: not compiled into the snapshot.
UNCOMPILED = {
    "VirtualKey": {"last_used_at"},  # the audit writer's touch (apps/audit/writer.py)
}


def _logged_models() -> set[str]:
    """Class names of the models whose saves write the change log (apps.policies.signals)."""
    names = set()
    for (uid, _sender), *_ in post_save.receivers:
        if isinstance(uid, str) and uid.startswith("odock-config-") and uid.endswith("-save"):
            names.add(apps.get_model(uid.removeprefix("odock-config-")[: -len("-save")]).__name__)
    return names


def _manager_model(node: ast.expr) -> str | None:
    """``Model`` of ``Model.objects….<call>`` (None for any other receiver)."""
    through_manager = False
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            through_manager |= node.attr in ("objects", "_default_manager")
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id if through_manager else None
        else:
            return None


def bulk_writes(source: str, models: set[str]) -> list[str]:
    """The bulk writes of ``source`` on ``models`` that would skip the change log."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in BULK:
            continue
        model = _manager_model(node.func.value)
        if model not in models:
            continue
        columns = {k.arg for k in node.keywords}
        if node.func.attr == "update" and columns <= UNCOMPILED.get(model, set()):
            continue  # a ``**values`` keyword is None: never a subset
        found.append(f"line {node.lineno}: {model}….{node.func.attr}()")
    return found


def test_the_snapshot_models_are_known():
    models = _logged_models()
    assert {"VirtualKey", "Budget", "RateLimit", "Deployment", "Team", "User"} <= models


def test_no_bulk_write_skips_the_change_log():
    models = _logged_models()
    found = []
    for path in sorted(APPS.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found += [
            f"{path.relative_to(APPS.parent)} {hit}"
            for hit in bulk_writes(path.read_text(), models)
        ]
    assert found == []


def test_the_check_sees_a_bulk_write():
    """The check itself can fail: what it must catch, and what it lets through."""
    source = """
VirtualKey.objects.filter(pk=1).update(revoked_at=now)
Budget.objects.bulk_create(rows)
Team.objects.filter(pk=1).update(**values)
VirtualKey.objects.filter(pk__in=ids).update(last_used_at=now)
AuditCheckpoint.objects.bulk_create(rows)
settings.update(x=1)
"""
    assert bulk_writes(source, {"VirtualKey", "Budget", "Team"}) == [
        "line 2: VirtualKey….update()",
        "line 3: Budget….bulk_create()",
        "line 4: Team….update()",
    ]
