"""What the SCIM discovery endpoints publish: only what this server really supports, so a
client (or a conformance tool) is never promised an attribute that is silently dropped."""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from django_scim import constants
from django_scim.models import SCIMServiceProviderConfig
from django_scim.schemas import ALL as LIBRARY_SCHEMAS

SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"
# The attributes (and sub-attributes) stored per resource.
SUPPORTED: dict[str, dict[str, set[str] | None]] = {
    constants.SchemaURI.USER: {
        "userName": None,
        "name": {"formatted", "familyName", "givenName"},
        "displayName": None,
        "active": None,
        "emails": {"value", "type", "primary"},
        "groups": {"value", "$ref", "display", "type"},
    },
    constants.SchemaURI.GROUP: {
        "displayName": None,
        "members": {"value", "$ref", "type"},
    },
}

# Required here although optional in RFC 7643: a group without a name cannot be mapped.
REQUIRED = {constants.SchemaURI.GROUP: {"displayName"}}


def _trimmed(schema: dict[str, Any]) -> dict[str, Any]:
    keep = SUPPORTED[schema["id"]]
    schema = copy.deepcopy(schema)
    attributes = []
    for attribute in schema["attributes"]:
        if attribute["name"] not in keep:
            continue
        subs = keep[attribute["name"]]
        if subs is not None and "subAttributes" in attribute:
            attribute["subAttributes"] = [
                s for s in attribute["subAttributes"] if s["name"] in subs
            ]
        if attribute["name"] in REQUIRED.get(schema["id"], ()):
            attribute["required"] = True
        attributes.append(attribute)
    schema["attributes"] = attributes
    schema["schemas"] = [SCHEMA_URN]
    schema["meta"] = {"resourceType": "Schema", "location": f"/Schemas/{schema['id']}"}
    return schema


def schemas() -> list[dict[str, Any]]:
    """``SCHEMAS_GETTER``: the core User and Group schemas, trimmed to what is stored."""
    return [_trimmed(s) for s in LIBRARY_SCHEMAS if s.get("id") in SUPPORTED]


class ServiceProviderConfig(SCIMServiceProviderConfig):
    """``SERVICE_PROVIDER_CONFIG_MODEL``."""

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "schemas": [constants.SchemaURI.SERVICE_PROVIDER_CONFIG],
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": settings.ODOCK_SCIM_MAX_RESULTS},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": False},
            "authenticationSchemes": settings.SCIM_SERVICE_PROVIDER["AUTHENTICATION_SCHEMES"],
            "meta": self.meta,
        }
        if settings.SCIM_SERVICE_PROVIDER.get("DOCUMENTATION_URI"):
            doc["documentationUri"] = settings.SCIM_SERVICE_PROVIDER["DOCUMENTATION_URI"]
        return doc
