"""The management API (/api/v1/): admin-token auth, organisation scoping, keys, policy,
spend, pagination, the OpenAPI schema, and the admin and command that issue tokens."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.api.models import ADMIN_TOKEN_PREFIX, AdminToken
from apps.api.services import (
    MAX_SECRET_LENGTH,
    admin_token_authenticate,
    admin_token_digest,
    admin_token_issue,
    admin_token_revoke,
)
from apps.audit.models import RequestLog
from apps.gateway.governance import period_start
from apps.keys.models import VirtualKey
from apps.keys.secrets import key_digest
from apps.keys.services import key_revoke, key_secret_matches
from apps.policies.models import Budget
from apps.tenancy.models import Organization, Project
from tests.factories import (
    allow_models,
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

API = "/api/v1"
ADMIN_SECRET = re.compile(r"odk-admin-[A-Za-z0-9_-]{20,}")
KEY_SECRET = re.compile(r"sk-odock-[A-Za-z0-9_-]{20,}")


@dataclass
class Tenant:
    org: Organization
    project: Project
    keys: list[VirtualKey]
    token: str  # an admin token secret scoped to this organisation


@pytest.fixture
def acme(db) -> Tenant:
    org = org_create("acme")
    project = project_create(team_create(org, "search"), "assistant")
    keys = [key_create(project, "prod").key, key_create(project, "staging").key]
    return Tenant(org, project, keys, admin_token_issue(name="acme-ops", organization=org).secret)


@pytest.fixture
def globex(db) -> Tenant:
    org = org_create("globex")
    project = project_create(team_create(org, "research"), "lab")
    keys = [key_create(project, "notebook").key]
    return Tenant(org, project, keys, admin_token_issue(name="globex-ops", organization=org).secret)


@pytest.fixture
def platform(db) -> str:
    return admin_token_issue(name="platform-ops").secret


def call(method: str, path: str, token: str | None, body: Any = None, **headers: str) -> Any:
    """One API call with the Django test client; ``token=None`` sends no Authorization."""
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    client = Client()
    if method == "GET":
        return client.get(API + path, headers=headers)
    return client.post(
        API + path,
        data=body if body is not None else "",
        content_type="application/json",
        headers=headers,
    )


def list_key_ids(token: str, query: str = "") -> list[int]:
    response = call("GET", f"/keys?limit=500{query}", token)
    assert response.status_code == 200, response.content
    assert response.json()["next_cursor"] is None
    return [item["id"] for item in response.json()["items"]]


# --- authentication -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["missing", "wrong-scheme", "unknown", "revoked", "expired"])
def test_calls_without_a_live_admin_token_get_401_and_never_echo_it(case, acme):
    issued = admin_token_issue(name="ci", organization=acme.org)
    secret = issued.secret
    headers: dict[str, str] = {}
    if case == "wrong-scheme":
        headers["Authorization"] = f"Basic {secret}"
    elif case == "unknown":
        secret = ADMIN_TOKEN_PREFIX + "not-a-real-token-0123456789abcdef"
    elif case == "revoked":
        admin_token_revoke(token=issued.token)
    elif case == "expired":
        AdminToken.objects.filter(pk=issued.token.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )

    for method, path in (
        ("GET", "/keys"),
        ("GET", "/orgs"),
        ("POST", f"/keys/{acme.keys[0].pk}/revoke"),
    ):
        response = call(method, path, None if case == "missing" else secret, **headers)
        assert response.status_code == 401, (case, path)
        assert response.json() == {"detail": "Unauthorized"}
        assert secret.encode() not in response.content
    acme.keys[0].refresh_from_db()
    assert acme.keys[0].revoked_at is None


@pytest.mark.django_db
def test_a_virtual_key_is_not_an_admin_token(acme):
    virtual_key_secret = key_create(acme.project).secret
    assert call("GET", "/keys", virtual_key_secret).status_code == 401


@pytest.mark.django_db
def test_admin_tokens_are_stored_as_a_keyed_digest_only(acme):
    issued = admin_token_issue(name="ci", organization=acme.org)
    row = AdminToken.objects.filter(pk=issued.token.pk).values()[0]

    assert issued.secret.startswith(ADMIN_TOKEN_PREFIX)
    assert row["digest"] == key_digest(issued.secret, settings.ODOCK_KEY_PEPPER)
    assert issued.secret not in {str(value) for value in row.values()}
    assert issued.secret.startswith(row["prefix"]) and len(row["prefix"]) < len(issued.secret)
    assert admin_token_authenticate(secret=issued.secret) == issued.token
    assert admin_token_authenticate(secret=issued.secret + "x") is None


@pytest.mark.django_db
def test_an_over_long_bearer_is_refused_before_any_lookup(acme):
    """Bounded like SCIM's tokens: a megabyte header is not hashed nor sent to the database."""
    longest = ADMIN_TOKEN_PREFIX + "a" * (MAX_SECRET_LENGTH - len(ADMIN_TOKEN_PREFIX))
    with CaptureQueriesContext(connection) as within_bound:
        assert admin_token_authenticate(secret=longest) is None
    assert len(within_bound) == 1  # an unknown secret of allowed length is looked up
    for secret in (longest + "a", acme.token + "a" * 1_000_000):
        with CaptureQueriesContext(connection) as queries:
            assert admin_token_authenticate(secret=secret) is None
        assert len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        response = call("GET", "/orgs", acme.token + "a" * 1_000_000)
    assert response.status_code == 401
    assert not [q for q in queries if "api_admintoken" in q["sql"]]
    assert call("GET", "/orgs", acme.token).status_code == 200


@pytest.mark.django_db
def test_a_successful_call_records_last_use(acme):
    token = AdminToken.objects.get(digest=admin_token_digest(acme.token))
    assert token.last_used_at is None
    assert call("GET", "/orgs", acme.token).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


# --- organisation scoping --------------------------------------------------------------


@pytest.mark.django_db
def test_an_org_token_sees_only_its_own_org_and_a_platform_token_sees_all(acme, globex, platform):
    acme_ids = {k.pk for k in acme.keys}
    globex_ids = {k.pk for k in globex.keys}

    assert set(list_key_ids(acme.token)) == acme_ids
    assert set(list_key_ids(globex.token)) == globex_ids
    assert set(list_key_ids(platform)) == acme_ids | globex_ids

    assert [o["name"] for o in call("GET", "/orgs", acme.token).json()] == ["acme"]
    assert [o["name"] for o in call("GET", "/orgs", platform).json()] == ["acme", "globex"]


@pytest.mark.django_db
def test_another_orgs_ids_are_404_exactly_like_missing_ones(acme, globex):
    theirs = globex.keys[0]
    missing = VirtualKey.objects.order_by("-pk").first().pk + 1000

    for method, suffix in (("GET", "policy"), ("POST", "revoke"), ("POST", "rotate")):
        other = call(method, f"/keys/{theirs.pk}/{suffix}", acme.token)
        absent = call(method, f"/keys/{missing}/{suffix}", acme.token)
        assert other.status_code == absent.status_code == 404, suffix
        assert other.json() == absent.json()
    assert call("GET", f"/spend?key={theirs.pk}", acme.token).status_code == 404
    created = call("POST", "/keys", acme.token, {"project_id": globex.project.pk, "name": "x"})
    assert created.status_code == 404

    theirs.refresh_from_db()
    assert theirs.revoked_at is None and theirs.previous_digest is None
    assert not VirtualKey.objects.filter(name="x").exists()


@pytest.mark.django_db
def test_naming_another_org_explicitly_is_403(acme, globex):
    for path in ("/keys?org=globex", "/spend?org=globex", "/keys?org=no-such-org"):
        response = call("GET", path, acme.token)
        assert response.status_code == 403, path
    body = {"org": "globex", "team": "research", "project": "lab", "name": "sneaky"}
    assert call("POST", "/keys", acme.token, body).status_code == 403
    assert not VirtualKey.objects.filter(name="sneaky").exists()


@pytest.mark.django_db
def test_key_filters_by_names(acme, globex, platform):
    other_project = project_create(acme.project.team, "batch")
    batch_key = key_create(other_project, "nightly").key

    assert set(list_key_ids(acme.token, "&team=search&project=batch")) == {batch_key.pk}
    assert set(list_key_ids(platform, "&org=globex")) == {k.pk for k in globex.keys}
    # A name alone finds the one object of that name in the token's scope...
    assert set(list_key_ids(platform, "&team=search")) == {
        *map(lambda k: k.pk, acme.keys),
        batch_key.pk,
    }
    assert set(list_key_ids(acme.token, "&project=batch")) == {batch_key.pk}
    assert call("GET", "/keys?org=acme&team=nope", platform).status_code == 404
    # ...and when several share it (team names are unique per organisation only), a 409
    # asks for the parent rather than guessing.
    project_create(team_create(globex.org, "search"), "assistant")
    response = call("GET", "/keys?team=search", platform)
    assert response.status_code == 409 and "give its organisation" in response.json()["detail"]
    assert call("GET", "/keys?project=assistant", platform).status_code == 409
    assert call("GET", "/spend?team=search", platform).status_code == 409
    assert set(list_key_ids(platform, "&org=acme&team=search&project=assistant")) == {
        k.pk for k in acme.keys
    }


# --- keys: create, revoke, rotate -------------------------------------------------------


@pytest.mark.django_db
def test_create_returns_the_secret_once_and_stores_only_its_digest(acme):
    expires = datetime(2031, 1, 1, tzinfo=UTC)
    response = call(
        "POST",
        "/keys",
        acme.token,
        {"project_id": acme.project.pk, "name": "batch", "expires_at": expires.isoformat()},
    )

    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["secret"]
    assert KEY_SECRET.fullmatch(secret)
    key = VirtualKey.objects.get(pk=body["key"]["id"])
    assert (key.project, key.name, key.expires_at) == (acme.project, "batch", expires)
    assert key_secret_matches(key=key, secret=secret)
    assert secret not in {str(v) for v in VirtualKey.objects.filter(pk=key.pk).values()[0].values()}
    assert body["key"]["prefix"] == key.prefix and secret.startswith(key.prefix)
    assert body["key"] | {"id": 0, "created_at": None} == {
        "id": 0,
        "name": "batch",
        "prefix": key.prefix,
        "status": "active",
        "organization": "acme",
        "team": "search",
        "project": "assistant",
        "project_id": acme.project.pk,
        "owner": None,
        "created_at": None,
        "expires_at": "2031-01-01T00:00:00Z",
        "revoked_at": None,
        "last_used_at": None,
        "previous_valid_until": None,
    }
    listed = call("GET", "/keys", acme.token)
    assert secret.encode() not in listed.content and key.digest.encode() not in listed.content


@pytest.mark.django_db
def test_create_by_names(acme, platform):
    by_org_token = call(
        "POST", "/keys", acme.token, {"team": "search", "project": "assistant", "name": "a"}
    )
    by_platform = call(
        "POST",
        "/keys",
        platform,
        {"org": "acme", "team": "search", "project": "assistant", "name": "b"},
    )

    assert by_org_token.status_code == by_platform.status_code == 201
    assert set(acme.project.keys.values_list("name", flat=True)) >= {"a", "b"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "prod"}, 409),  # taken in that project
        ({"name": "not a slug"}, 422),
        ({"name": ""}, 422),
        ({"name": "x", "expires_at": "2031-01-01T00:00:00"}, 422),  # no timezone
        ({"name": "x", "team": "search"}, 422),  # both project_id and names
    ],
)
def test_create_refusals(acme, body, status):
    before = VirtualKey.objects.count()
    response = call("POST", "/keys", acme.token, {"project_id": acme.project.pk, **body})
    assert response.status_code == status, response.content
    assert "detail" in response.json()
    assert VirtualKey.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "expires_at",
    [
        0,  # pydantic would read a number as a Unix time: a key expired in 1970
        1_900_000_000,
        "1970-01-01T00:00:00Z",  # in the past
        "2020-06-01T12:00:00+02:00",
        "9999-01-01T00:00:00Z",  # could not be read back once stored in UTC
        "2031-01-01",  # a date is not a time
        True,
    ],
)
def test_create_refuses_an_expiry_that_is_not_a_future_time(acme, expires_at):
    before = VirtualKey.objects.count()
    body = {"project_id": acme.project.pk, "name": "x", "expires_at": expires_at}
    response = call("POST", "/keys", acme.token, body)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"][-1] == "expires_at"
    assert VirtualKey.objects.count() == before


@pytest.mark.django_db
def test_create_with_a_future_expiry_stores_it_in_utc(acme):
    body = {"project_id": acme.project.pk, "name": "x", "expires_at": "2031-01-01T02:00:00+02:00"}
    response = call("POST", "/keys", acme.token, body)
    assert response.status_code == 201, response.content
    key = VirtualKey.objects.get(name="x")
    assert key.expires_at == datetime(2031, 1, 1, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "raw",
    [
        b"[null, null]",  # was read as "no grace given" and rotated the key
        b"[]",
        b"5",
        b'"grace"',
        b'{"grace_seconds": "60"}',  # a string is not the documented integer
        b'{"grace_seconds": true}',
        b'{"grace_seconds": 60, "grace": 1}',  # a field the schema does not have
    ],
)
def test_rotate_refuses_a_body_that_is_not_the_documented_object(acme, raw):
    key = acme.keys[0]
    response = Client().post(
        f"{API}/keys/{key.pk}/rotate",
        data=raw,
        content_type="application/json",
        headers={"Authorization": f"Bearer {acme.token}"},
    )
    assert response.status_code == 422, response.content
    key.refresh_from_db()
    assert key.previous_digest is None  # not rotated


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_400_and_changes_nothing(acme):
    key = acme.keys[0]
    for path in ("/keys", f"/keys/{key.pk}/rotate"):
        response = Client().post(
            API + path,
            data=b"\x00{",
            content_type="application/json",
            headers={"Authorization": f"Bearer {acme.token}"},
        )
        assert response.status_code == 400 and "detail" in response.json(), path
    key.refresh_from_db()
    assert key.previous_digest is None and VirtualKey.objects.count() == len(acme.keys)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/keys/99999999999999999999/policy", "/keys/0/policy", "/spend?key=99999999999999999999"],
)
def test_ids_beyond_a_bigint_are_422_not_a_server_error(acme, path):
    assert call("GET", path, acme.token).status_code == 422


@pytest.mark.django_db
def test_unknown_query_parameters_are_422(acme):
    for path in ("/keys?inclde_revoked=true", "/orgs?x=1", f"/keys/{acme.keys[0].pk}/policy?x=1"):
        response = call("GET", path, acme.token)
        assert response.status_code == 422, path


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["1", "yes", "True", ""])
def test_booleans_in_a_query_are_true_or_false(acme, value):
    assert call("GET", f"/keys?include_revoked={value}", acme.token).status_code == 422
    assert call("GET", "/keys?include_revoked=true", acme.token).status_code == 200


@pytest.mark.django_db
def test_create_needs_a_project(acme):
    assert call("POST", "/keys", acme.token, {"name": "x"}).status_code == 422
    response = call("POST", "/keys", acme.token, {"team": "search", "project": "nope", "name": "x"})
    assert response.status_code == 404


@pytest.mark.django_db
def test_revoke_hides_the_key_from_the_default_list(acme):
    key = acme.keys[0]
    response = call("POST", f"/keys/{key.pk}/revoke", acme.token)

    assert response.status_code == 200
    assert response.json()["status"] == "revoked" and response.json()["revoked_at"]
    key.refresh_from_db()
    assert key.is_revoked
    assert key.pk not in list_key_ids(acme.token)
    assert key.pk in list_key_ids(acme.token, "&include_revoked=true")
    first = key.revoked_at
    assert call("POST", f"/keys/{key.pk}/revoke", acme.token).status_code == 200
    key.refresh_from_db()
    assert key.revoked_at == first


@pytest.mark.django_db
def test_rotate_returns_a_new_secret_and_keeps_the_old_one_for_the_grace(acme):
    issued = key_create(acme.project, "rolling")
    before = timezone.now()
    response = call("POST", f"/keys/{issued.key.pk}/rotate", acme.token, {"grace_seconds": 600})

    assert response.status_code == 200, response.content
    body = response.json()
    key = VirtualKey.objects.get(pk=issued.key.pk)
    assert body["secret"] != issued.secret
    assert key_secret_matches(key=key, secret=body["secret"])
    assert not key_secret_matches(key=key, secret=issued.secret)
    assert key.previous_digest == key_digest(issued.secret, settings.ODOCK_KEY_PEPPER)
    # JSON datetimes carry milliseconds (DjangoJSONEncoder), the database microseconds.
    grace_end = datetime.fromisoformat(body["previous_valid_until"])
    assert abs(grace_end - key.previous_valid_until) < timedelta(milliseconds=1)
    assert before + timedelta(seconds=599) < key.previous_valid_until
    assert key.previous_valid_until <= timezone.now() + timedelta(seconds=600)


@pytest.mark.django_db
def test_rotate_without_a_body_uses_the_default_grace(acme):
    response = call("POST", f"/keys/{acme.keys[0].pk}/rotate", acme.token)
    assert response.status_code == 200, response.content
    grace_end = datetime.fromisoformat(response.json()["previous_valid_until"])
    expected = timezone.now() + timedelta(seconds=settings.ODOCK_ROTATION_GRACE_SECONDS)
    assert abs(grace_end - expected) < timedelta(minutes=1)


@pytest.mark.django_db
def test_rotate_refusals(acme):
    key = acme.keys[0]
    too_long = {"grace_seconds": 31 * 86_400}
    assert call("POST", f"/keys/{key.pk}/rotate", acme.token, too_long).status_code == 422
    key_revoke(key=key)
    assert call("POST", f"/keys/{key.pk}/rotate", acme.token).status_code == 409
    key.refresh_from_db()
    assert key.previous_digest is None


# --- policy ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_policy_reflects_inheritance(acme, globex):
    provider = provider_create("http://127.0.0.1:9/v1")
    gpt_a, gpt_b, gpt_c = (model_create(name, provider) for name in ("gpt-a", "gpt-b", "gpt-c"))
    key = acme.keys[0]
    allow_models(acme.project.team, gpt_a, gpt_b)
    allow_models(key, gpt_b, gpt_c)
    Budget.objects.create(organization=acme.org, limit_usd=Decimal("100"), period="monthly")
    Budget.objects.create(key=key, limit_usd=Decimal("5"), period="monthly")

    response = call("GET", f"/keys/{key.pk}/policy", acme.token)

    assert response.status_code == 200, response.content
    policy = response.json()
    assert policy["levels"] == ["org:acme", "team:search", "project:assistant", "key:prod"]
    assert policy["models"] == {
        "effective": ["gpt-b"],
        "by_level": {"team:search": ["gpt-a", "gpt-b"], "key:prod": ["gpt-b", "gpt-c"]},
    }
    budgets = {b["level"]: b for b in policy["budgets"]}
    assert set(budgets) == {"org:acme", "key:prod"}
    assert budgets["key:prod"]["binding"] and not budgets["org:acme"]["binding"]
    assert budgets["key:prod"]["limit_usd"] == "5"  # exact, no trailing zeros


# --- spend -------------------------------------------------------------------------------


def log_create(key: VirtualKey, cost: str, created_at: datetime | None = None) -> RequestLog:
    team = key.project.team
    return RequestLog.objects.create(
        request_id=f"req-{RequestLog.objects.count()}-{key.pk}-{cost}",
        created_at=created_at or timezone.now(),
        organization_id=team.organization_id,
        team=team,
        project=key.project,
        key=key,
        key_prefix=key.prefix,
        endpoint="chat.completions",
        model_requested="gpt-4o-mini",
        status_code=200,
        cost_usd=Decimal(cost),
    )


def spend_by_level(token: str, query: str = "") -> dict[str, dict]:
    response = call("GET", f"/spend{query}", token)
    assert response.status_code == 200, response.content
    return {row["level"]: row for row in response.json()}


@pytest.mark.django_db
def test_spend_is_the_sum_of_this_periods_request_costs(acme, globex):
    prod, staging = acme.keys
    Budget.objects.create(key=prod, limit_usd=Decimal("2"), period="monthly", hard=True)
    Budget.objects.create(project=acme.project, limit_usd=Decimal("10"), period="daily", hard=False)
    Budget.objects.create(organization=globex.org, limit_usd=Decimal("50"), period="monthly")
    for cost in ("0.125", "0.000001", "0.3"):
        log_create(prod, cost)
    log_create(staging, "1.5")
    log_create(globex.keys[0], "7")
    # Before this month (and this day) began: not in the current period.
    month_start = period_start("monthly", datetime.now(UTC))
    log_create(prod, "40", created_at=month_start - timedelta(seconds=1))

    rows = spend_by_level(acme.token)

    assert set(rows) == {"key:prod", "project:assistant"}  # never globex's budget
    key_row = rows["key:prod"]
    assert Decimal(key_row["spent_usd"]) == Decimal("0.425001")
    assert Decimal(key_row["remaining_usd"]) == Decimal("1.574999")
    assert Decimal(key_row["limit_usd"]) == Decimal("2")
    assert key_row["percent"] == "21.25"
    assert key_row["period"] == "monthly" and key_row["hard"] is True
    assert key_row["period_key"] == f"m{datetime.now(UTC):%Y%m}"
    for field in ("limit_usd", "spent_usd", "remaining_usd", "percent"):
        assert isinstance(key_row[field], str), field  # money is never a JSON number
    project_row = rows["project:assistant"]
    assert Decimal(project_row["spent_usd"]) == Decimal("1.925001")
    assert project_row["hard"] is False and project_row["period"] == "daily"


@pytest.mark.django_db
def test_spend_filters_and_scoping(acme, globex, platform):
    prod, staging = acme.keys
    Budget.objects.create(organization=acme.org, limit_usd=Decimal("100"))
    Budget.objects.create(key=prod, limit_usd=Decimal("1"))
    Budget.objects.create(key=staging, limit_usd=Decimal("1"))
    Budget.objects.create(organization=globex.org, limit_usd=Decimal("1"))
    log_create(staging, "0.5")

    assert set(spend_by_level(platform)) == {"org:acme", "key:prod", "key:staging", "org:globex"}
    assert set(spend_by_level(globex.token)) == {"org:globex"}
    # A key: the budgets that govern it (its org's and its own), not its siblings'.
    assert set(spend_by_level(acme.token, f"?key={prod.pk}")) == {"org:acme", "key:prod"}
    staging_rows = spend_by_level(platform, f"?org=acme&key={staging.pk}")
    assert Decimal(staging_rows["key:staging"]["spent_usd"]) == Decimal("0.5")
    assert Decimal(staging_rows["org:acme"]["spent_usd"]) == Decimal("0.5")
    # A key outside the named organisation is not found there.
    assert call("GET", f"/spend?org=globex&key={prod.pk}", platform).status_code == 404


# --- pagination --------------------------------------------------------------------------


@pytest.mark.django_db
def test_cursor_pagination_returns_every_key_exactly_once_without_counting(acme, globex, platform):
    for i in range(8):
        key_create(acme.project if i % 2 else globex.project, f"bulk-{i}")
    revoked = key_create(acme.project, "gone").key
    key_revoke(key=revoked)
    expected = list(
        VirtualKey.objects.filter(revoked_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )

    seen: list[int] = []
    cursor = ""
    pages = 0
    with CaptureQueriesContext(connection) as queries:
        while True:
            response = call("GET", f"/keys?limit=3{cursor}", platform)
            assert response.status_code == 200, response.content
            page = response.json()
            assert len(page["items"]) <= 3
            seen += [item["id"] for item in page["items"]]
            pages += 1
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"

    assert seen == expected
    assert pages == -(-len(expected) // 3)
    assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "cursor=%%%", "cursor=bm9wZQ", "cursor=k1.", "cursor=k1.-1"]
)
def test_bad_page_parameters_are_422(acme, query):
    assert call("GET", f"/keys?{query}", acme.token).status_code == 422


# --- OpenAPI -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_openapi_schema_and_docs_load_without_a_token():
    response = Client().get(f"{API}/openapi.json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Odock management API"
    assert set(schema["paths"]) == {
        f"{API}/keys",
        f"{API}/keys/{{key_id}}/revoke",
        f"{API}/keys/{{key_id}}/rotate",
        f"{API}/keys/{{key_id}}/policy",
        f"{API}/spend",
        f"{API}/orgs",
        f"{API}/audit/records",
        f"{API}/audit/records/{{request_id}}",
        f"{API}/audit/export",
        f"{API}/audit/changes",
        f"{API}/evidence/packs",
        f"{API}/evidence/packs/{{pack_id}}",
        f"{API}/evidence/packs/{{pack_id}}/files/{{name}}",
        f"{API}/reports/spend",
    }
    assert set(schema["paths"][f"{API}/keys"]) == {"get", "post"}
    assert schema["components"]["securitySchemes"]["AdminTokenAuth"]["scheme"] == "bearer"
    money = schema["components"]["schemas"]["SpendOut"]["properties"]["spent_usd"]
    assert money["type"] == "string"
    assert reverse("odock-api:openapi-json") == f"{API}/openapi.json"
    assert Client().get(f"{API}/docs").status_code == 200


def test_every_operation_documents_its_refusals_with_their_shapes():
    """401 without a live token and 422 for refused input everywhere, 400 for a body that
    is not JSON; each with the error shape the API really answers."""
    schema = Client().get(f"{API}/openapi.json").json()
    operations = [(m, p, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
    assert len(operations) == 16
    for method, path, op in operations:
        codes = set(op["responses"])
        assert {"401", "422"} <= codes, (method, path)
        if "requestBody" in op:
            assert "400" in codes, (method, path)
        shape = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
        assert shape.endswith("/ValidationErrorOut"), (method, path)
    assert {"403", "409"} <= set(schema["paths"][f"{API}/keys"]["post"]["responses"])
    export = schema["paths"][f"{API}/audit/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/x-ndjson", "text/csv"}


# --- the admin and the command that issue tokens -----------------------------------------


@pytest.mark.django_db
def test_admin_add_shows_the_token_once_and_stores_only_its_digest(admin_client, acme):
    add_url = reverse("admin:api_admintoken_add")
    assert 'name="organization"' in admin_client.get(add_url).content.decode()

    response = admin_client.post(add_url, {"name": "finance-bot", "organization": acme.org.pk})

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "api/admintoken_created.html"
    html = response.content.decode()
    [secret] = set(ADMIN_SECRET.findall(html))
    assert "it will not be shown again" in html
    assert "no-store" in response["Cache-Control"]
    token = AdminToken.objects.get(name="finance-bot")
    assert token.organization == acme.org
    assert token.digest == admin_token_digest(secret) and secret not in token.digest
    assert admin_token_authenticate(secret=secret) == token
    assert secret not in str(response.cookies)
    assert not LogEntry.objects.filter(change_message__contains=secret).exists()
    assert not LogEntry.objects.filter(object_repr__contains=secret).exists()
    change_url = reverse("admin:api_admintoken_change", args=[token.pk])
    for url in (change_url, reverse("admin:api_admintoken_changelist")):
        page = admin_client.get(url).content.decode()
        assert secret not in page and token.digest not in page, url
    assert token.prefix in admin_client.get(change_url).content.decode()
    # The API accepts it, scoped to acme.
    assert [o["name"] for o in call("GET", "/orgs", secret).json()] == ["acme"]


@pytest.mark.django_db
def test_admin_revoke_action(admin_client, acme):
    token = AdminToken.objects.get(digest=admin_token_digest(acme.token))
    response = admin_client.post(
        reverse("admin:api_admintoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.is_revoked
    assert call("GET", "/orgs", acme.token).status_code == 401


@pytest.mark.django_db
def test_command_prints_a_working_token_once(acme):
    out, err = io.StringIO(), io.StringIO()
    call_command("odock_admin_token", "deploy-bot", "--org", "acme", stdout=out, stderr=err)

    secret = out.getvalue().strip()
    assert ADMIN_SECRET.fullmatch(secret)
    assert secret not in err.getvalue()
    token = AdminToken.objects.get(name="deploy-bot")
    assert token.organization == acme.org and token.digest == admin_token_digest(secret)
    assert [o["name"] for o in call("GET", "/orgs", secret).json()] == ["acme"]

    out = io.StringIO()
    call_command("odock_admin_token", "root", stdout=out, stderr=io.StringIO())
    assert AdminToken.objects.get(name="root").organization is None
    with pytest.raises(CommandError, match="no organisation"):
        call_command("odock_admin_token", "x", "--org", "nope", stderr=io.StringIO())


@pytest.mark.django_db
def test_admin_token_pages_render_without_the_secret_or_digest(admin_client, acme):
    token = AdminToken.objects.get(digest=admin_token_digest(acme.token))
    platform_token = admin_token_issue(name="root").token
    changelist = reverse("admin:api_admintoken_changelist")
    pages = [
        changelist,
        changelist + "?q=acme",
        changelist + "?status=active",
        changelist + "?status=revoked",
        reverse("admin:api_admintoken_add"),
        reverse("admin:api_admintoken_change", args=[token.pk]),
        reverse("admin:api_admintoken_change", args=[platform_token.pk]),
        reverse("admin:api_admintoken_history", args=[token.pk]),
        reverse("admin:autocomplete")
        + "?app_label=api&model_name=admintoken&field_name=organization&term=a",
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert acme.token not in html and token.digest not in html, url
        assert platform_token.digest not in html, url
    listing = admin_client.get(changelist).content.decode()
    assert "platform (all organisations)" in listing and token.prefix in listing
