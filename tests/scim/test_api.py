"""The SCIM API: authentication, organisation scoping both ways, validation without
partial writes, filters and pages (Django's test client: the full middleware stack)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.scim.models import ScimGroup, ScimIdentity, ScimToken
from apps.scim.tokens import scim_token_digest, scim_token_issue, scim_token_revoke
from tests.scim.conftest import GROUP_URN, USER_URN, ScimClient

pytestmark = pytest.mark.django_db

User = get_user_model()


def _error(response, status: int, scim_type: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    if scim_type:
        assert body["scimType"] == scim_type
    return body


# --- authentication ----------------------------------------------------------------------


def test_no_token_unknown_revoked_or_expired_token_is_401(acme, admin_client):
    acme.scim.create_user("ada")
    expired = scim_token_issue(
        organization=acme.org, name="old", expires_at=timezone.now() - timedelta(seconds=1)
    )
    revoked = scim_token_issue(organization=acme.org, name="gone")
    scim_token_revoke(token=revoked.token)
    for secret in (
        None,
        "odk-scim-neverIssued",
        "not-a-scim-token",
        expired.secret,
        revoked.secret,
    ):
        for path in ("Users", "Groups", "ServiceProviderConfig", "Schemas", "Nope"):
            response = ScimClient(secret).get(path)
            body = _error(response, 401)
            assert response["WWW-Authenticate"].startswith("Bearer")
            assert "Resources" not in body
        _error(ScimClient(secret).post("Users", {"schemas": [USER_URN], "userName": "eve"}), 401)
    # A logged-in admin session is not a SCIM credential either.
    _error(admin_client.get("/scim/v2/Users"), 401)
    assert list(ScimIdentity.objects.values_list("user_name", flat=True)) == ["ada"]


def test_the_secret_is_stored_only_as_a_keyed_digest(acme):
    token = ScimToken.objects.get(pk=acme.token.pk)
    assert acme.secret.startswith("odk-scim-")
    assert token.digest == scim_token_digest(acme.secret) != acme.secret
    assert acme.secret.startswith(token.prefix) and len(token.prefix) < len(acme.secret) // 2
    for field in ScimToken._meta.concrete_fields:
        assert acme.secret not in str(getattr(token, field.attname))
    assert acme.scim.get("Users").status_code == 200
    assert ScimToken.objects.get(pk=token.pk).last_used_at is not None


# --- scoping -----------------------------------------------------------------------------


def test_an_organisation_sees_and_changes_only_its_own_users_and_groups(acme, globex):
    ada = acme.scim.create_user("ada")
    engineers = acme.scim.create_group("engineers", [ada["id"]])
    # The same person provisioned by globex is another resource with another id.
    ada_at_globex = globex.scim.create_user("ada")
    assert ada_at_globex["id"] != ada["id"]
    assert ScimIdentity.objects.get(scim_id=ada["id"]).user_id == (
        ScimIdentity.objects.get(scim_id=ada_at_globex["id"]).user_id
    )

    # globex's token: acme's users and groups are 404, absent from lists and searches.
    for path in (f"Users/{ada['id']}", f"Groups/{engineers['id']}"):
        _error(globex.scim.get(path), 404)
        _error(globex.scim.patch(path, {"op": "replace", "path": "externalId", "value": "x"}), 404)
        _error(globex.scim.put(path, {"schemas": [USER_URN], "userName": "ada"}), 404)
        _error(globex.scim.delete(path), 404)
    listed = globex.scim.get("Users").json()
    assert [u["id"] for u in listed["Resources"]] == [ada_at_globex["id"]]
    assert globex.scim.get("Groups").json()["totalResults"] == 0
    found = globex.scim.get("Users", filter='userName eq "ada" or userName eq "ADA"').json()
    assert [u["id"] for u in found["Resources"]] == [ada_at_globex["id"]]
    search = globex.scim.post(
        "Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": "active eq true",
        },
    )
    assert [u["id"] for u in search.json()["Resources"]] == [ada_at_globex["id"]]
    # globex cannot put acme's user into its own group either.
    _error(globex.scim.create_group_response("ops", [ada["id"]]), 400, "invalidValue")

    # acme's token still sees and changes its own, unchanged by all of the above.
    own = acme.scim.get(f"Users/{ada['id']}").json()
    assert own["userName"] == "ada" and own.get("externalId") is None and own["active"] is True
    assert [m["value"] for m in acme.scim.get(f"Groups/{engineers['id']}").json()["members"]] == [
        ada["id"]
    ]
    assert (
        acme.scim.patch(
            f"Users/{ada['id']}", {"op": "replace", "path": "externalId", "value": "e-1"}
        ).json()["externalId"]
        == "e-1"
    )
    assert acme.scim.delete(f"Groups/{engineers['id']}").status_code == 204
    assert ScimGroup.objects.count() == 0


# --- validation: errors change nothing -----------------------------------------------------


def test_bad_payloads_get_scim_errors_and_change_nothing(acme):
    ada = acme.scim.create_user("ada", displayName="Ada", emails=[{"value": "ada@acme.test"}])
    group = acme.scim.create_group("engineers", [ada["id"]])
    before_users, before_identities = User.objects.count(), list(ScimIdentity.objects.values())

    bad_users = [
        "{not json",
        {"schemas": [USER_URN]},  # no userName
        {"schemas": [USER_URN], "userName": 42},
        {"schemas": [USER_URN], "userName": "bob", "active": "maybe"},
        {"schemas": [USER_URN], "userName": "bob", "emails": [{"value": "not-an-address"}]},
        {"schemas": [USER_URN], "userName": "bob", "name": "Bob"},
        {"schemas": [GROUP_URN], "userName": "bob"},
        {"schemas": [USER_URN], "userName": "x" * 151},
        {"schemas": [USER_URN], "userName": "has a space"},  # not a valid account name
    ]
    for body in bad_users:
        _error(acme.scim.post("Users", body), 400)
    _error(acme.scim.post("Users", {"schemas": [USER_URN], "userName": "ADA"}), 409, "uniqueness")

    path = f"Users/{ada['id']}"
    # A valid first operation followed by an invalid one: nothing of the first is kept.
    _error(
        acme.scim.patch(
            path,
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "replace", "path": "active", "value": "perhaps"},
        ),
        400,
    )
    _error(acme.scim.patch(path, {"op": "remove", "path": "userName"}), 400, "mutability")
    _error(acme.scim.patch(path, {"op": "replace", "path": "password", "value": "x"}), 400)
    _error(acme.scim.patch(path, {"op": "explode", "path": "active", "value": False}), 400)
    _error(acme.scim.request("PATCH", path, {"Operations": "nope"}), 400)
    _error(acme.scim.put(path, {"schemas": [USER_URN], "displayName": "no userName"}), 400)

    _error(acme.scim.create_group_response("", []), 400)
    _error(acme.scim.create_group_response("ghosts", ["no-such-user"]), 400, "invalidValue")
    _error(
        acme.scim.patch(
            f"Groups/{group['id']}",
            {"op": "replace", "path": "displayName", "value": "renamed"},
            {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
        ),
        400,
    )
    _error(acme.scim.get("Users", count="-1"), 400)
    _error(acme.scim.get("Users", startIndex="0"), 400)

    assert User.objects.count() == before_users
    assert list(ScimIdentity.objects.values()) == before_identities
    assert list(ScimGroup.objects.values_list("display_name", flat=True)) == ["engineers"]
    assert acme.scim.get(f"Groups/{group['id']}").json()["members"][0]["value"] == ada["id"]


# --- reading: filters, pages, attributes ---------------------------------------------------


def test_filter_pagination_and_attribute_selection(acme):
    ids = [acme.scim.create_user(f"user{i}", externalId=f"ext-{i}")["id"] for i in range(5)]
    page = acme.scim.get("Users", startIndex="2", count="2").json()
    assert (page["totalResults"], page["itemsPerPage"], page["startIndex"]) == (5, 2, 2)
    every = [
        u["id"]
        for p in (1, 3, 5)
        for u in acme.scim.get("Users", startIndex=str(p), count="2").json()["Resources"]
    ]
    assert sorted(every) == sorted(ids)

    found = acme.scim.get("Users", filter='externalId eq "ext-3"').json()
    assert [u["userName"] for u in found["Resources"]] == ["user3"]
    assert acme.scim.get("Users", filter='userName eq "USER1"').json()["totalResults"] == 1
    _error(acme.scim.get("Users", filter="userName eq"), 400)

    only = acme.scim.get(f"Users/{ids[0]}", attributes="userName").json()
    assert set(only) == {"schemas", "id", "userName"}
    without = acme.scim.get("Users", excludedAttributes="groups,emails").json()["Resources"][0]
    assert "groups" not in without and "emails" not in without and "userName" in without


def test_changes_are_attributed_to_the_token_in_the_change_trail(acme):
    from apps.compliance.models import ConfigChange
    from apps.keys.models import VirtualKey
    from tests.factories import key_create, project_create, team_create

    ada = acme.scim.create_user("ada")
    key = key_create(
        project=project_create(team_create(acme.org)), owner=User.objects.get(username="ada")
    ).key
    acme.scim.patch(f"Users/{ada['id']}", {"op": "replace", "path": "active", "value": False})
    assert VirtualKey.objects.get(pk=key.pk).suspended_at is not None
    change = (
        ConfigChange.objects.filter(object_type="keys.virtualkey", object_id=str(key.pk))
        .order_by("pk")
        .last()
    )
    assert change.actor == f"scim token {acme.token.name} (acme)"
    assert change.changes["suspended_at"]["before"] is None


def test_patch_dialects_of_entra_id_and_okta(acme):
    ada = acme.scim.create_user("ada", emails=[{"value": "ada@acme.test", "type": "work"}])
    bob = acme.scim.create_user("bob")
    group = acme.scim.create_group("eng", [ada["id"]])
    # Entra ID: capitalised ops, a filtered e-mail path, string booleans, URN-prefixed paths.
    patched = acme.scim.patch(
        f"Users/{ada['id']}",
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "lovelace@acme.test"},
        {"op": "Replace", "path": f"{USER_URN}:name.familyName", "value": "Lovelace"},
        {"op": "Add", "path": "externalId", "value": "entra-1"},
        {  # the enterprise extension is not stored: ignored, as in a POST body
            "op": "Add",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "value": "Research",
        },
    ).json()
    assert patched["emails"] == [{"value": "lovelace@acme.test", "primary": True, "type": "work"}]
    assert (patched["name"]["familyName"], patched["externalId"]) == ("Lovelace", "entra-1")
    acme.scim.patch(
        f"Groups/{group['id']}",
        {"op": "Add", "path": "members", "value": [{"value": bob["id"]}]},
    )
    # Okta: a path-less replace repeating the group's id.
    renamed = acme.scim.patch(
        f"Groups/{group['id']}",
        {"op": "replace", "value": {"id": group["id"], "displayName": "engineering"}},
    ).json()
    assert renamed["displayName"] == "engineering"
    assert {m["value"] for m in renamed["members"]} == {ada["id"], bob["id"]}
    _error(
        acme.scim.patch(f"Groups/{group['id']}", {"op": "replace", "value": {"id": "another-id"}}),
        400,
        "mutability",
    )
    assert acme.scim.get(f"Groups/{group['id']}").json()["id"] == group["id"]


def test_filters_on_unknown_attributes_are_refused_and_groups_filter_by_member(acme, globex):
    ada, bob = acme.scim.create_user("ada"), acme.scim.create_user("bob")
    engineers = acme.scim.create_group("eng", [ada["id"]])
    acme.scim.create_group("empty")
    globex.scim.create_group("eng")

    # The parser would drop a condition it cannot map and answer more than was asked.
    for query in ('nickName eq "x"', 'userName eq "ada" or nickName eq "x"', "userName eq"):
        _error(acme.scim.get("Users", filter=query), 400, "invalidFilter")
    urn_query = f'{USER_URN}:userName eq "bob"'
    assert [u["id"] for u in acme.scim.get("Users", filter=urn_query).json()["Resources"]] == [
        bob["id"]
    ]

    def groups(query: str) -> list[str]:
        return sorted(
            g["displayName"] for g in acme.scim.get("Groups", filter=query).json()["Resources"]
        )

    # Entra ID's membership check.
    assert groups(f'id eq "{engineers["id"]}" and members[value eq "{ada["id"]}"]') == ["eng"]
    assert groups(f'id eq "{engineers["id"]}" and members[value eq "{bob["id"]}"]') == []
    # A group without members still matches on its own attributes; globex's is not seen.
    assert groups('displayName eq "eng" or displayName eq "empty"') == ["empty", "eng"]


def test_users_and_groups_carry_their_meta(acme):
    """RFC 7643 §3.1: each resource's type, times and own location (one shared builder)."""
    ada = acme.scim.create_user("ada")
    engineers = acme.scim.create_group("engineers", [ada["id"]])
    for path, kind in ((f"Users/{ada['id']}", "User"), (f"Groups/{engineers['id']}", "Group")):
        meta = acme.scim.get(path).json()["meta"]
        assert meta["resourceType"] == kind
        assert meta["location"].endswith(f"/{path}")
        created, modified = (datetime.fromisoformat(meta[k]) for k in ("created", "lastModified"))
        assert created <= modified
