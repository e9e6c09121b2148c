"""SCIM filters (``?filter=userName eq "ada"``) as SQL, limited to the token's organisation.

django-scim2 turns the filter into a raw query on the model's table; the organisation
condition is added around it (never appended to its WHERE, where an ``or`` in the filter
would bind looser than the added ``and``).
"""

from __future__ import annotations

from typing import Any

from django_scim.filters import FilterQuery

from apps.scim.models import ScimGroup, ScimIdentity


class _OrganizationFilterQuery(FilterQuery):
    @classmethod
    def get_raw_args(cls, q: Any, request: Any = None) -> tuple[str, list[Any]]:
        sql, params = q.sql, list(q.params)
        table = cls.table_name()
        # The inner SQL is the parser's (values are parameters); the table name is ours.
        inner = sql.strip().rstrip(";")
        sql = f"SELECT * FROM ({inner}) AS {table} WHERE organization_id = %s"  # noqa: S608
        return sql, [*params, request.scim_token.organization_id]


class IdentityFilterQuery(_OrganizationFilterQuery):
    model_getter = staticmethod(lambda: ScimIdentity)
    attr_map = {
        ("id", None, None): "scim_id",
        ("userName", None, None): "user_name",
        ("externalId", None, None): "external_id",
        ("displayName", None, None): "display_name",
        ("active", None, None): "active",
        ("name", "givenName", None): "given_name",
        ("name", "familyName", None): "family_name",
        ("emails", None, None): "email",
        ("emails", "value", None): "email",
    }


class GroupFilterQuery(_OrganizationFilterQuery):
    model_getter = staticmethod(lambda: ScimGroup)
    attr_map = {
        ("id", None, None): "scim_id",
        ("displayName", None, None): "display_name",
        ("externalId", None, None): "external_id",
    }
