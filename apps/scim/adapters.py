"""django-scim2 adapters: SCIM Users are :class:`ScimIdentity` rows and SCIM Groups are
:class:`ScimGroup` rows of the token's organisation.

The library's views do the HTTP (lookup, list, filter, pagination, status codes); these
adapters read and validate the SCIM documents and hand every consequence to
:mod:`apps.scim.provisioning`. A document is validated whole before anything is
written, and the views run each write in one transaction, so a bad payload changes
nothing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import IntegrityError
from django.urls import reverse
from django_scim import constants, exceptions
from django_scim.adapters import SCIMGroup, SCIMUser

from apps.scim import provisioning
from apps.scim.models import ScimGroup, ScimIdentity, ScimToken

USER_URN = constants.SchemaURI.USER
GROUP_URN = constants.SchemaURI.GROUP
# Microsoft Entra ID maps department, manager, … here by default.
ENTERPRISE_URN = constants.SchemaURI.ENTERPRISE_USER
# A PATCH path: attribute, an optional [value eq "…"] or [type eq "…"] filter, an optional
# sub-attribute (members[value eq "id"], emails[type eq "work"].value, name.givenName).
_PATH = re.compile(
    r'^(?P<attr>[A-Za-z$]+)(?:\[\s*(?P<fattr>value|type)\s+eq\s+"(?P<fvalue>[^"]*)"\s*\])?'
    r"(?:\.(?P<sub>[A-Za-z]+))?$"
)
_TRUE_FALSE = {"true": True, "false": False}
_email = EmailValidator()


def _bad(detail: str, scim_type: str = "invalidValue") -> exceptions.BadRequestError:
    return exceptions.BadRequestError(detail, scim_type=scim_type)


def token_of(request: Any) -> ScimToken:
    """The token the request authenticated with (set by :mod:`apps.scim.auth`)."""
    return request.scim_token


def _string(value: Any, name: str, *, required: bool = False, max_length: int = 254) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _bad(f'"{name}" must be a string.')
    value = value.strip()
    if required and not value:
        raise _bad(f'"{name}" is required.')
    if len(value) > max_length:
        raise _bad(f'"{name}" is longer than {max_length} characters.')
    return value


def _boolean(value: Any, name: str) -> bool:
    """A JSON boolean; "True"/"False" strings too (Microsoft Entra ID sends them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE_FALSE:
        return _TRUE_FALSE[value.lower()]
    raise _bad(f'"{name}" must be a boolean.')


def _strip_urn(path: str, urn: str) -> str:
    return path[len(urn) + 1 :] if path.startswith(urn + ":") else path


def _parse_path(path: Any, urn: str) -> tuple[str, tuple[str, str] | None, str | None]:
    """``(attribute, (filter attribute, filter value) or None, sub-attribute)``."""
    if not isinstance(path, str):
        raise _bad('"path" must be a string.', "invalidPath")
    match = _PATH.match(_strip_urn(path.strip(), urn))
    if match is None:
        raise _bad(f'Unsupported PATCH path "{path[:100]}".', "invalidPath")
    selector = (match["fattr"], match["fvalue"]) if match["fattr"] else None
    return match["attr"], selector, match["sub"]


def _same_id(adapter: Any, value: Any) -> None:
    """Okta repeats the resource's ``id`` in a PATCH value: fine if unchanged."""
    if value != adapter.id:
        raise _bad('"id" cannot be changed.', "mutability")


def _operations(operations: Any) -> list[tuple[str, Any, Any]]:
    if not isinstance(operations, list):
        raise _bad('"Operations" must be a list.')
    parsed = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise _bad("Each PATCH operation must be an object.")
        op = operation.get("op")
        if not isinstance(op, str) or op.lower() not in constants.VALID_PATCH_OPS:
            raise _bad('Each PATCH operation needs an "op" of add, remove or replace.')
        parsed.append((op.lower(), operation.get("path"), operation.get("value")))
    return parsed


class _Base:
    request: Any
    obj: Any

    @property
    def organization(self):
        return token_of(self.request).organization

    @property
    def id(self) -> str:
        return str(self.obj.scim_id)

    @property
    def location(self) -> str:
        from django_scim.utils import get_base_scim_location_getter

        return urljoin(get_base_scim_location_getter()(self.request), self.path)

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "resourceType": self.resource_type,
            "created": self.obj.created_at.isoformat(),
            "lastModified": self.obj.updated_at.isoformat(),
            "location": self.location,
        }


class ScimUserAdapter(_Base, SCIMUser):
    """A SCIM User: a :class:`ScimIdentity` of the token's organisation."""

    id_field = "scim_id"

    def __init__(self, obj: ScimIdentity, request: Any = None) -> None:
        super().__init__(obj, request=request)
        self.values: dict[str, Any] = {}

    @classmethod
    def resource_type_dict(cls, request: Any = None) -> dict[str, Any]:
        return _resource_type("User", "/Users", USER_URN, "A person in this organisation", request)

    # --- reading -------------------------------------------------------------------------
    @property
    def display_name(self) -> str:
        """How the person is named in a group's member list."""
        obj = self.obj
        full = f"{obj.given_name} {obj.family_name}".strip()
        return obj.display_name or obj.formatted_name or full or obj.user_name

    @property
    def emails(self) -> list[dict[str, Any]]:
        if not self.obj.email:
            return []
        email = {"value": self.obj.email, "primary": self.obj.email_primary}
        if self.obj.email_type:
            email["type"] = self.obj.email_type
        return [email]

    @property
    def groups(self) -> list[dict[str, Any]]:
        dicts = []
        for group in self.obj.groups.all():
            adapter = ScimGroupAdapter(group, self.request)
            dicts.append(
                {"value": adapter.id, "$ref": adapter.location, "display": group.display_name}
            )
        return dicts

    def to_dict(self) -> dict[str, Any]:
        obj = self.obj
        name = {
            "formatted": obj.formatted_name,
            "givenName": obj.given_name,
            "familyName": obj.family_name,
        }
        name = {k: v for k, v in name.items() if v}
        doc: dict[str, Any] = {
            "schemas": [USER_URN],
            "id": self.id,
            "userName": obj.user_name,
            "active": obj.active,
            "emails": self.emails,
            "groups": self.groups,
            "meta": self.meta,
        }
        if obj.external_id:
            doc["externalId"] = obj.external_id
        if obj.display_name:
            doc["displayName"] = obj.display_name
        if name:
            doc["name"] = name
        return doc

    # --- writing -------------------------------------------------------------------------
    def validate_dict(self, d: Any) -> None:
        """Check the whole document (POST or PUT) before anything is changed."""
        if not isinstance(d, dict):
            raise _bad("The body must be a SCIM User object.")
        schemas = d.get("schemas")
        if schemas is not None and (not isinstance(schemas, list) or USER_URN not in schemas):
            raise _bad(f'"schemas" must contain "{USER_URN}".', "invalidSyntax")
        name = d.get("name") or {}
        if not isinstance(name, dict):
            raise _bad('"name" must be an object.')
        values = {
            "user_name": _string(d.get("userName"), "userName", required=True, max_length=150),
            "external_id": _string(d.get("externalId"), "externalId"),
            "display_name": _string(d.get("displayName"), "displayName"),
            "given_name": _string(name.get("givenName"), "name.givenName", max_length=150),
            "family_name": _string(name.get("familyName"), "name.familyName", max_length=150),
            "formatted_name": _string(name.get("formatted"), "name.formatted"),
        }
        values.update(self._email(d.get("emails")))
        if d.get("active") is not None:
            values["active"] = _boolean(d.get("active"), "active")
        self.values = values

    @staticmethod
    def _email(value: Any) -> dict[str, Any]:
        """The primary (else the first) address: one e-mail is kept per identity."""
        if value in (None, []):
            return {"email": "", "email_type": "", "email_primary": True}
        if isinstance(value, dict):  # OneLogin sends one object despite the RFC
            value = [value]
        if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
            raise _bad('"emails" must be a list of objects.')
        first = sorted(value, key=lambda e: not e.get("primary"))[0]
        email = _string(first.get("value"), "emails.value")
        try:
            _email(email)
        except ValidationError:
            raise _bad('"emails" holds an invalid e-mail address.') from None
        primary = first.get("primary", False)
        return {
            "email": email,
            "email_type": _string(first.get("type"), "emails.type", max_length=20),
            "email_primary": _boolean(primary, "emails.primary"),
        }

    def from_dict(self, d: dict[str, Any]) -> None:
        """PUT replaces every attribute (an attribute left out is cleared; ``active`` left
        out is kept)."""
        for field, value in self.values.items():
            setattr(self.obj, field, value)

    def save(self) -> None:
        obj = self.obj
        creating = obj.pk is None
        was_active = (
            None
            if creating
            else (ScimIdentity.objects.filter(pk=obj.pk).values_list("active", flat=True).first())
        )
        clash = ScimIdentity.objects.filter(
            organization=self.organization, user_name__iexact=obj.user_name
        ).exclude(pk=obj.pk)
        if clash.exists():
            raise exceptions.IntegrityError(
                f'userName "{obj.user_name}" is already provisioned.', scim_type="uniqueness"
            )
        if creating:
            obj.organization = self.organization
            try:
                obj.user = provisioning.user_for_identity(
                    user_name=obj.user_name,
                    email=obj.email,
                    given_name=obj.given_name,
                    family_name=obj.family_name,
                )
            except ValidationError as error:  # e.g. a userName no account may have
                raise _bad(_messages(error)) from None
            except IntegrityError:  # the same account created by a concurrent request
                raise exceptions.IntegrityError(
                    f'userName "{obj.user_name}" is being provisioned.', scim_type="uniqueness"
                ) from None
            if ScimIdentity.objects.filter(organization=obj.organization, user=obj.user).exists():
                raise exceptions.IntegrityError(
                    "This person is already provisioned under another userName.",
                    scim_type="uniqueness",
                )
        try:
            obj.full_clean(exclude=["organization", "user"])
        except ValidationError as error:
            raise _bad(_messages(error)) from None
        try:
            obj.save()
        except IntegrityError:
            raise exceptions.IntegrityError(
                "The user is already provisioned.", scim_type="uniqueness"
            ) from None
        provisioning.identity_saved(obj, was_active=was_active)

    def delete(self) -> None:
        provisioning.identity_delete(self.obj)

    def handle_operations(self, operations: Any) -> None:
        """RFC 7644 §3.5.2 PATCH on the attributes a User has here; validated whole,
        then saved once."""
        doc = self.to_dict()
        for op, path, value in _operations(operations):
            if path in (None, ""):
                if op == "remove":
                    raise _bad('"remove" needs a "path".', "noTarget")
                if not isinstance(value, dict):
                    raise _bad("A PATCH without a path needs an object value.", "invalidSyntax")
                for key, item in value.items():
                    self._apply(doc, op, key, item)
            else:
                self._apply(doc, op, path, value)
        doc.pop("groups", None)
        self.validate_dict(doc)
        self.from_dict(doc)
        self.save()

    def _apply(self, doc: dict[str, Any], op: str, path: Any, value: Any) -> None:
        if isinstance(path, str) and path.startswith(ENTERPRISE_URN):
            return  # not stored (nor published): ignored, as in a POST or PUT body
        attr, selector, sub = _parse_path(path, USER_URN)
        if attr == "id" and selector is None and sub is None:
            _same_id(self, value)
            return
        if attr == "emails" and selector is not None and selector[0] == "type":
            if sub != "value":
                raise _bad(f'Unsupported PATCH path "{path}".', "invalidPath")
            if op == "remove":
                doc.pop("emails", None)
            else:
                doc["emails"] = [{"value": value, "type": selector[1], "primary": True}]
            return
        if attr == "name" and sub:
            name = doc.setdefault("name", {})
            if not isinstance(name, dict):
                raise _bad('"name" must be an object.')
            if op == "remove":
                name.pop(sub, None)
            else:
                name[sub] = value
            return
        if attr == "name" and op != "remove" and isinstance(value, dict):
            doc["name"] = {**(doc.get("name") or {}), **value} if op == "add" else value
            return
        if attr not in {"userName", "externalId", "displayName", "active", "emails", "name"}:
            raise _bad(f'"{attr}" cannot be changed here.', "invalidPath")
        if selector is not None or (sub and attr != "emails"):
            raise _bad(f'Unsupported PATCH path "{path}".', "invalidPath")
        if op == "remove":
            if attr in ("userName", "active"):
                raise _bad(f'"{attr}" cannot be removed.', "mutability")
            doc.pop(attr, None)
            return
        if attr == "emails" and sub == "value":
            value = [{"value": value, "primary": True}]
        doc[attr] = value


def _messages(error: ValidationError) -> str:
    return "; ".join(str(m) for m in error.messages)[:500]


class ScimGroupAdapter(_Base, SCIMGroup):
    """A SCIM Group: a :class:`ScimGroup` of the token's organisation."""

    id_field = "scim_id"

    def __init__(self, obj: ScimGroup, request: Any = None) -> None:
        super().__init__(obj, request=request)
        self.values: dict[str, Any] = {}
        self.new_members: list[ScimIdentity] | None = None

    @classmethod
    def resource_type_dict(cls, request: Any = None) -> dict[str, Any]:
        return _resource_type("Group", "/Groups", GROUP_URN, "A group mapped to a role", request)

    @property
    def display_name(self) -> str:
        return self.obj.display_name

    @property
    def members(self) -> list[dict[str, Any]]:
        if self.obj.pk is None:
            return []
        dicts = []
        for identity in self.obj.members.all():
            adapter = ScimUserAdapter(identity, self.request)
            dicts.append(
                # No "display": RFC 7643's Group schema (§8.7.1) has none for members.
                {"value": adapter.id, "$ref": adapter.location, "type": "User"}
            )
        return dicts

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schemas": [GROUP_URN],
            "id": self.id,
            "displayName": self.obj.display_name,
            "members": self.members,
            "meta": self.meta,
        }
        if self.obj.external_id:
            doc["externalId"] = self.obj.external_id
        return doc

    def validate_dict(self, d: Any) -> None:
        if not isinstance(d, dict):
            raise _bad("The body must be a SCIM Group object.")
        schemas = d.get("schemas")
        if schemas is not None and (not isinstance(schemas, list) or GROUP_URN not in schemas):
            raise _bad(f'"schemas" must contain "{GROUP_URN}".', "invalidSyntax")
        self.values = {
            "display_name": _string(d.get("displayName"), "displayName", required=True),
            "external_id": _string(d.get("externalId"), "externalId"),
        }
        self.new_members = self._resolve(d.get("members") or [])

    def _resolve(self, members: Any) -> list[ScimIdentity]:
        """The identities named by ``members``: all of this organisation, or a 400."""
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise _bad('"members" must be a list of objects.')
        ids = []
        for member in members:
            value = member.get("value")
            if not isinstance(value, str) or not value:
                raise _bad('Each member needs a "value": the id of a User.')
            ids.append(value)
        found = {
            i.scim_id: i
            for i in ScimIdentity.objects.filter(
                organization=self.organization, scim_id__in=ids
            ).select_related("organization", "user")
        }
        missing = [i for i in ids if i not in found]
        if missing:
            raise _bad(f"No such user: {', '.join(sorted(set(missing)))[:300]}.")
        return list({i: found[i] for i in ids}.values())

    def from_dict(self, d: dict[str, Any]) -> None:
        for field, value in self.values.items():
            setattr(self.obj, field, value)

    def save(self) -> None:
        obj = self.obj
        if obj.pk is None:
            obj.organization = self.organization
        try:
            obj.full_clean(exclude=["organization", "team", "project", "members"])
        except ValidationError as error:
            raise _bad(_messages(error)) from None
        before = list(obj.members.select_related("organization", "user")) if obj.pk else []
        obj.save()
        if self.new_members is not None:
            obj.members.set(self.new_members)
            provisioning.groups_changed([*before, *self.new_members])

    def delete(self) -> None:
        provisioning.group_delete(self.obj)

    def handle_operations(self, operations: Any) -> None:
        """PATCH: add/remove/replace ``members`` (also ``members[value eq "id"]``) and
        replace ``displayName`` / ``externalId``; validated whole, then saved once."""
        doc = {
            "displayName": self.obj.display_name,
            "externalId": self.obj.external_id,
            "members": [{"value": m["value"]} for m in self.members],
        }
        for op, path, value in _operations(operations):
            if path in (None, ""):
                if op == "remove":
                    raise _bad('"remove" needs a "path".', "noTarget")
                if not isinstance(value, dict):
                    raise _bad("A PATCH without a path needs an object value.", "invalidSyntax")
                for key, item in value.items():
                    self._apply(doc, op, key, item)
            else:
                self._apply(doc, op, path, value)
        self.validate_dict(doc)
        self.from_dict(doc)
        self.save()

    def _apply(self, doc: dict[str, Any], op: str, path: Any, value: Any) -> None:
        attr, selector, sub = _parse_path(path, GROUP_URN)
        if attr == "id" and selector is None and sub is None:
            _same_id(self, value)
            return
        if attr == "members" and sub is None:
            current = [m["value"] for m in doc["members"]]
            if selector is not None:
                if op != "remove" or selector[0] != "value":
                    raise _bad(f'Unsupported PATCH path "{path}".', "invalidPath")
                doc["members"] = [{"value": v} for v in current if v != selector[1]]
                return
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(m, dict) for m in value)
            ):
                raise _bad('"members" must be a list of objects.')
            named = [m.get("value") for m in value or []]
            if op == "add":
                merged = current + [v for v in named if v not in current]
            elif op == "replace":
                merged = named
            elif value is None:  # remove, no value: every member
                merged = []
            else:
                merged = [v for v in current if v not in named]
            doc["members"] = [{"value": v} for v in merged]
            return
        if attr in ("displayName", "externalId") and selector is None and sub is None:
            if op == "remove":
                if attr == "displayName":
                    raise _bad('"displayName" cannot be removed.', "mutability")
                doc[attr] = ""
            else:
                doc[attr] = value
            return
        raise _bad(f'Unsupported PATCH path "{path}".', "invalidPath")


# --- django-scim2 settings hooks ------------------------------------------------------


def identity_model() -> type[ScimIdentity]:
    """``USER_MODEL_GETTER``: SCIM Users are identities, not login accounts."""
    return ScimIdentity


def base_location(request: Any = None, *args: Any, **kwargs: Any) -> str:
    """``BASE_LOCATION_GETTER``: resource locations on the host the caller used."""
    if request is None:
        return ""
    return f"{request.scheme}://{request.get_host()}"


def organization_filter(model: Any):
    """``GET_EXTRA_MODEL_FILTER_KWARGS_GETTER``: every lookup, list and search is limited
    to the token's organisation, so another organisation's ids are a 404."""

    def kwargs(request: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        return {"organization_id": token_of(request).organization_id}

    return kwargs


def queryset_prefetch(model: Any):
    """``GET_QUERYSET_POST_PROCESSOR_GETTER``: load what the documents show at once."""

    def process(request: Any, qs: Any, *args: Any, **kw: Any) -> Any:
        if model is ScimIdentity:
            return qs.prefetch_related("groups")
        if model is ScimGroup:
            return qs.prefetch_related("members")
        return qs

    return process


def _resource_type(name: str, endpoint: str, schema: str, description: str, request: Any):
    path = reverse("scim:resource-types", kwargs={"uuid": name})
    return {
        "schemas": [constants.SchemaURI.RESOURCE_TYPE],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "description": description,
        "schema": schema,
        "meta": {"location": urljoin(base_location(request), path), "resourceType": "ResourceType"},
    }
