"""``GET /api/v1/reports/spend``: admin-token auth and organisation scoping, JSON, CSV and
XLSX, and 422s for bad parameters."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime
from decimal import Decimal

import openpyxl
import pytest
from django.db.models import Sum
from django.test import Client

from apps.api.services import admin_token_issue, admin_token_revoke
from apps.audit.models import RequestLog
from apps.reports.rollup import usage_rollup_run
from tests.reports.conftest import insert, random_rows

URL = "/api/v1/reports/spend"
RANGE = {"start": "2026-02-26", "end": "2026-03-03"}


@pytest.fixture
def data(tenants):
    rows = insert(random_rows(tenants, random.Random(99), 300))
    usage_rollup_run(now=datetime(2026, 3, 10, tzinfo=UTC))
    return rows


def raw_cost(org=None) -> Decimal:
    qs = RequestLog.objects.filter(
        created_at__gte=datetime(2026, 2, 26, tzinfo=UTC),
        created_at__lt=datetime(2026, 3, 3, tzinfo=UTC),
    )
    if org is not None:
        qs = qs.filter(organization_id=org.pk)
    return qs.aggregate(s=Sum("cost_usd"))["s"]


def get(token: str | None, **params) -> object:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().get(URL, {**RANGE, **params}, **headers)


@pytest.mark.django_db
def test_org_token_sees_only_its_organisation(data, tenants):
    token = admin_token_issue(name="acme-finance", organization=tenants.acme).secret
    response = get(token, group_by="org,team", granularity="month")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["organizations"] == ["acme"]
    assert {row["organization"] for row in body["rows"]} == {"acme"}
    assert Decimal(body["totals"]["cost_usd"]) == raw_cost(tenants.acme)
    assert raw_cost(tenants.acme) != raw_cost()  # globex had traffic too, and is left out

    # Asking for another organisation is refused, not silently narrowed.
    assert get(token, org="globex").status_code == 403
    assert get(token, org="acme").json()["totals"] == body["totals"]


@pytest.mark.django_db
def test_platform_token_sees_all_or_the_organisation_it_names(data, tenants):
    token = admin_token_issue(name="platform").secret
    everything = get(token).json()
    assert everything["organizations"] is None
    assert Decimal(everything["totals"]["cost_usd"]) == raw_cost()
    globex = get(token, org="globex").json()
    assert Decimal(globex["totals"]["cost_usd"]) == raw_cost(tenants.globex)
    assert get(token, org="nope").status_code == 404


@pytest.mark.django_db
def test_no_revoked_or_wrong_token_gets_nothing(data, tenants):
    issued = admin_token_issue(name="old", organization=tenants.acme)
    admin_token_revoke(token=issued.token)
    assert get(None).status_code == 401
    assert get(issued.secret).status_code == 401
    assert get("odk-admin-not-a-real-token").status_code == 401


@pytest.mark.django_db
def test_csv_and_xlsx_downloads_total_the_raw_records(data, tenants):
    token = admin_token_issue(name="acme-finance", organization=tenants.acme).secret
    response = get(token, group_by="team,model", format="csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        'attachment; filename="spend_acme_2026-02-26_2026-03-03.csv"'
    )
    lines = list(csv.reader(io.StringIO(response.content.decode())))
    totals = lines[lines.index([]) - 1]
    assert totals[0] == "TOTAL" and Decimal(totals[-1]) == raw_cost(tenants.acme)

    response = get(token, group_by="key", granularity="day", format="xlsx")
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    totals = list(book["Spend"].iter_rows(values_only=True))[-1]
    assert Decimal(repr(totals[-1])) == raw_cost(tenants.acme)


@pytest.mark.django_db
def test_bad_parameters_are_422(data, tenants):
    token = admin_token_issue(name="platform").secret
    assert get(token, group_by="team,colour").status_code == 422
    assert get(token, start="2026-03-03", end="2026-03-01").status_code == 422
    assert get(token, granularity="week").status_code == 422
    assert get(token, format="pdf").status_code == 422
    assert (
        Client().get(URL, {"start": "2026-02-26"}, HTTP_AUTHORIZATION=f"Bearer {token}").status_code
        == 422
    )


@pytest.mark.django_db
def test_the_endpoint_is_in_the_openapi_schema():
    schema = Client().get("/api/v1/openapi.json").json()
    operation = schema["paths"][URL]["get"]
    assert operation["operationId"] == "reports_spend"
    assert {p["name"] for p in operation["parameters"]} >= {
        "start",
        "end",
        "group_by",
        "granularity",
        "format",
        "org",
    }
