"""Pages that show several budgets' spend read them from one snapshot of the request log:
a record landing meanwhile shows in all of them or in none (a key's remaining budget
lower than before while its team's is unchanged was seen in the portal)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection

from apps.audit.models import RequestLog
from apps.policies import spend
from apps.policies.models import Budget
from tests.factories import key_create


def _land_record(key, cost: Decimal) -> None:
    """Commit a record from another connection, as the gateway's audit shipper does."""

    def write() -> None:
        try:
            RequestLog.objects.create(
                request_id=uuid.uuid4().hex,
                created_at=datetime.now(UTC),
                organization_id=key.project.team.organization_id,
                team_id=key.project.team_id,
                project_id=key.project_id,
                key_id=key.pk,
                endpoint="chat.completions",
                status_code=200,
                cost_usd=cost,
                model_requested="gpt-4o-mini",
            )
        finally:
            connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def test_a_record_landing_between_two_budgets_reads_shows_in_neither(transactional_db, monkeypatch):
    key = key_create().key
    team = Budget.objects.create(team=key.project.team, limit_usd=100, period="monthly")
    own = Budget.objects.create(key=key, limit_usd=25, period="monthly")
    read_one = spend.budget_spent_usd
    reads: list[int] = []

    def read_then_a_record_lands(budget, now=None):
        value = read_one(budget, now)
        if not reads:
            _land_record(key, Decimal("0.01"))
        reads.append(budget.pk)
        return value

    monkeypatch.setattr(spend, "budget_spent_usd", read_then_a_record_lands)
    during = spend.budgets_spent_usd([team, own])
    assert reads == [team.pk, own.pk]
    assert during == {team.pk: Decimal(0), own.pk: Decimal(0)}

    monkeypatch.setattr(spend, "budget_spent_usd", read_one)
    after = spend.budgets_spent_usd([team, own])
    assert after == {team.pk: Decimal("0.01"), own.pk: Decimal("0.01")}


def test_inside_an_outer_transaction_the_reads_share_it(transactional_db):
    from django.db import transaction

    key = key_create().key
    own = Budget.objects.create(key=key, limit_usd=25, period="monthly")
    with transaction.atomic():
        assert spend.budgets_spent_usd([own]) == {own.pk: Decimal(0)}
        assert connection.in_atomic_block  # the outer transaction is still open
