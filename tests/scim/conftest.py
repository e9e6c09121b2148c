"""SCIM fixtures: organisations, their tokens, and a client speaking SCIM with a token."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from apps.scim.tokens import scim_token_issue
from tests.factories import org_create

SCIM = "application/scim+json"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class ScimClient:
    """Django's test client with a bearer token (None: no header)."""

    secret: str | None

    def request(self, method: str, path: str, body: Any = None, **extra: Any):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.secret}"} if self.secret else {}
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        return getattr(Client(), method.lower())(
            "/scim/v2/" + path.lstrip("/"),
            data=data,
            content_type=SCIM,
            **headers,
            **extra,
        )

    def get(self, path: str, **query: Any):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.secret}"} if self.secret else {}
        return Client().get("/scim/v2/" + path.lstrip("/"), query, **headers)

    def post(self, path: str, body: Any):
        return self.request("POST", path, body)

    def put(self, path: str, body: Any):
        return self.request("PUT", path, body)

    def patch(self, path: str, *operations: dict[str, Any]):
        return self.request("PATCH", path, {"schemas": [PATCH_URN], "Operations": list(operations)})

    def delete(self, path: str):
        return self.request("DELETE", path)

    def create_user(self, user_name: str, **extra: Any) -> dict[str, Any]:
        response = self.post("Users", {"schemas": [USER_URN], "userName": user_name, **extra})
        assert response.status_code == 201, response.content
        return response.json()

    def create_group_response(self, name: str, members: Sequence[str] = ()):
        body = {
            "schemas": [GROUP_URN],
            "displayName": name,
            "members": [{"value": m} for m in members],
        }
        return self.post("Groups", body)

    def create_group(self, name: str, members: Sequence[str] = ()) -> dict[str, Any]:
        response = self.create_group_response(name, members)
        assert response.status_code == 201, response.content
        return response.json()


@dataclass
class Tenant:
    org: Any
    token: Any
    secret: str
    scim: ScimClient


def tenant(name: str | None = None) -> Tenant:
    org = org_create(name)
    issued = scim_token_issue(organization=org, name=f"idp-{org.name}")
    return Tenant(org=org, token=issued.token, secret=issued.secret, scim=ScimClient(issued.secret))


@pytest.fixture
def acme(db) -> Tenant:
    return tenant("acme")


@pytest.fixture
def globex(db) -> Tenant:
    return tenant("globex")


@pytest.fixture
def short_connections(monkeypatch) -> None:
    """For tests against a live server: each request thread's connection is closed after
    the request, so none is left open past the test (or blocks the database's teardown)."""
    from django.db import connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
