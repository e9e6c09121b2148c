"""SCIM filters (``?filter=userName eq "ada"``) as SQL, limited to the token's organisation.

django-scim2 turns the filter into a raw query on the model's table (scim2-filter-parser:
values are parameters). Two things are added here: a filter naming an attribute this
server cannot filter on is a 400 ``invalidFilter`` (the parser would silently drop that
condition and answer more than was asked), and the organisation condition is put around
the query (never appended to its WHERE, where an ``or`` in the filter would bind looser
than the added ``and``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_scim import constants, exceptions
from django_scim.filters import FilterQuery
from scim2_filter_parser.attr_paths import AttrPath

from apps.scim.models import ScimGroup, ScimIdentity

AttrMap = dict[tuple[str, str | None, str | None], str]


def _with_urn(columns: dict[tuple[str, str | None], str], urn: str) -> AttrMap:
    """Each attribute both bare and with its schema URN (``urn:…:User:userName``)."""
    mapped: AttrMap = {}
    for (attr, sub), column in columns.items():
        mapped[(attr, sub, None)] = column
        mapped[(attr, sub, urn)] = column
    return mapped


class _OrganizationFilterQuery(FilterQuery):
    attr_map: AttrMap = {}

    @classmethod
    def search(cls, filter_query: str, request: Any = None) -> QuerySet:
        try:
            paths = list(AttrPath(filter_query, cls.attr_map))
        except Exception:  # the parser's own errors: lexing, parsing
            raise exceptions.BadRequestError(
                "The filter could not be parsed.", scim_type="invalidFilter"
            ) from None
        unknown = sorted(
            {
                ".".join(filter(None, (p.attr_name, p.sub_attr)))
                for p in paths
                if (p.attr_name, p.sub_attr, p.uri) not in cls.attr_map
            }
        )
        if unknown:
            raise exceptions.BadRequestError(
                f"Cannot filter on {', '.join(unknown)[:200]}.", scim_type="invalidFilter"
            )
        return super().search(filter_query, request)

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
    attr_map = _with_urn(
        {
            ("id", None): "scim_id",
            ("userName", None): "user_name",
            ("externalId", None): "external_id",
            ("displayName", None): "display_name",
            # Portable: the parser sends true/false as the strings TRUE/FALSE.
            ("active", None): "(CASE WHEN active THEN 'TRUE' ELSE 'FALSE' END)",
            ("name", "givenName"): "given_name",
            ("name", "familyName"): "family_name",
            ("name", "formatted"): "formatted_name",
            ("emails", None): "email",
            ("emails", "value"): "email",
            ("emails", "type"): "email_type",
        },
        constants.SchemaURI.USER,
    )


class GroupFilterQuery(_OrganizationFilterQuery):
    """Groups, also by member: Entra ID asks ``id eq "g" and members[value eq "u"]``."""

    model_getter = staticmethod(lambda: ScimGroup)
    # Left joins: a group without members still matches a filter on its own attributes.
    joins = (
        "LEFT JOIN scim_scimgroup_members AS scim_gm ON scim_gm.scimgroup_id = scim_scimgroup.id",
        "LEFT JOIN scim_scimidentity AS scim_gmi ON scim_gmi.id = scim_gm.scimidentity_id",
    )
    attr_map = _with_urn(
        {
            ("id", None): "scim_scimgroup.scim_id",
            ("displayName", None): "scim_scimgroup.display_name",
            ("externalId", None): "scim_scimgroup.external_id",
            ("members", None): "scim_gmi.scim_id",
            ("members", "value"): "scim_gmi.scim_id",
        },
        constants.SchemaURI.GROUP,
    )
