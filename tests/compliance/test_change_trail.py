"""The configuration change trail: every governance model's create, update and delete
through the admin leaves a ConfigChange naming the admin user, the request and the
changed values — and never a secret."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import call_command
from django.db.models import Model as DjangoModel
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from apps.api.models import AdminToken
from apps.api.services import admin_token_issue
from apps.audit.models import ContentCapture
from apps.compliance.context import change_context, changes_by
from apps.compliance.middleware import ChangeContextMiddleware
from apps.compliance.models import ConfigChange
from apps.compliance.trail import tracked_models
from apps.guardrails.models import GuardrailRule
from apps.identity.models import Membership, Role
from apps.keys.models import VirtualKey
from apps.keys.services import IssuedKey
from apps.policies.models import Budget, DeploymentTagRule, ModelAccess, ModelAlias, RateLimit
from apps.portal.models import KeyLifetimeRule
from apps.providers.models import Deployment, Model, ModelFallback, Provider
from apps.scim.models import ScimGroup, ScimSettings, ScimToken
from apps.scim.tokens import scim_token_issue
from apps.sso.models import GroupMapping, OidcProvider
from apps.tenancy.models import Organization, Project, Team
from tests.admin.conftest import raw_column
from tests.compliance.conftest import admin_url, post_form, trail_of, trail_text
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

FIXTURES = Path(__file__).resolve().parent.parent / "policies" / "fixtures"


@dataclass
class Base:
    org: Organization
    team: Team
    project: Project
    issued: IssuedKey
    provider: Provider
    model: Model
    model2: Model


@pytest.fixture
def base(db) -> Base:
    org = org_create("acme")
    team = team_create(org, "search")
    project = project_create(team, "assistant")
    provider = provider_create("http://127.0.0.1:9001/v1", name="openai-main")
    return Base(
        org=org,
        team=team,
        project=project,
        issued=key_create(project, "assistant-prod"),
        provider=provider,
        model=model_create("gpt-4o-mini", provider),
        model2=model_create("gpt-4o", provider),
    )


@dataclass(frozen=True)
class Case:
    add: Any  # Base -> form values
    change: Any  # (Base, obj) -> form values
    field: str  # a field the change edits
    after: Any  # its value afterwards, as the trail stores it


CASES: dict[type[DjangoModel], Case] = {
    Organization: Case(
        lambda b: {"name": "globex"},
        lambda b, o: {"display_name": "Globex"},
        "display_name",
        "Globex",
    ),
    Team: Case(
        lambda b: {"organization": b.org.pk, "name": "ops"},
        lambda b, o: {"name": "ops-2"},
        "name",
        "ops-2",
    ),
    Project: Case(
        lambda b: {"team": b.team.pk, "name": "bot"},
        lambda b, o: {"name": "bot-2"},
        "name",
        "bot-2",
    ),
    VirtualKey: Case(
        lambda b: {"project": b.project.pk, "name": "ci"},
        lambda b, o: {"name": "ci-2"},
        "name",
        "ci-2",
    ),
    Provider: Case(
        lambda b: {
            "name": "vllm",
            "kind": "openai_compatible",
            "api_base": "http://127.0.0.1:9/v1",
            "api_key": "sk-vllm-plaintext",
        },
        lambda b, o: {"api_base": "http://127.0.0.1:10/v1"},
        "api_base",
        "http://127.0.0.1:10/v1",
    ),
    Model: Case(
        lambda b: {"name": "llama-3"},
        lambda b, o: {"input_per_mtok": "1.5"},
        "input_per_mtok",
        "1.500000",
    ),
    Deployment: Case(
        lambda b: {"model": b.model.pk, "provider": b.provider.pk, "upstream_model": "x-up"},
        lambda b, o: {"weight": "3"},
        "weight",
        3,
    ),
    Budget: Case(
        lambda b: {"team": b.team.pk, "limit_usd": "10", "period": "monthly", "hard": "on"},
        lambda b, o: {"limit_usd": "20"},
        "limit_usd",
        "20.000000",
    ),
    RateLimit: Case(
        lambda b: {"project": b.project.pk, "rpm": "60"}, lambda b, o: {"rpm": "120"}, "rpm", 120
    ),
    ModelAccess: Case(
        lambda b: {"key": b.issued.key.pk, "model": b.model.pk},
        lambda b, o: {"model": b.model2.pk},
        "model",
        None,  # the second model's id, checked below
    ),
    ModelAlias: Case(
        lambda b: {"team": b.team.pk, "alias": "claude-sonnet-*", "model": b.model.pk},
        lambda b, o: {"alias": "claude-sonnet-5"},
        "alias",
        "claude-sonnet-5",
    ),
    DeploymentTagRule: Case(
        lambda b: {"project": b.project.pk, "tag": "region", "allowed_values": '["eu"]'},
        lambda b, o: {"allowed_values": '["eu", "ch"]'},
        "allowed_values",
        ["eu", "ch"],
    ),
}


def assert_by_admin(change: ConfigChange, user: User) -> None:
    assert change.actor == user.username
    assert change.actor_user_id == user.pk
    assert re.fullmatch(r"[0-9a-f]{32}", change.request_id)
    assert change.client_ip == "127.0.0.1"


def test_every_tracked_model_is_covered():
    """A governance model added to the trail needs a case here (or its own test below)."""
    assert set(tracked_models()) == set(CASES) | {
        ModelFallback,
        ContentCapture,
        GuardrailRule,
        AdminToken,
        *WHO_ADMINISTERS,
    }


#: Who may administer and how people get roles: covered by the test below.
WHO_ADMINISTERS = {
    Membership,
    OidcProvider,
    GroupMapping,
    ScimSettings,
    ScimToken,
    ScimGroup,
    KeyLifetimeRule,
}


@pytest.mark.django_db
def test_who_may_administer_is_in_the_trail_at_its_level_without_secrets():
    org = Organization.objects.create(name="trail-people")
    team = Team.objects.create(organization=org, name="search")
    person = User.objects.create_user("pat")
    with changes_by("platform-root"):
        Membership.objects.create(user=person, role=Role.TEAM_ADMIN, team=team)
        provider = OidcProvider.objects.create(
            organization=org,
            issuer="http://127.0.0.1:9",
            client_id="c",
            client_secret="oidc-s3cr3t",
        )
        GroupMapping.objects.create(provider=provider, group="g", role=Role.TEAM_ADMIN, team=team)
        ScimSettings.objects.create(organization=org)
        issued = scim_token_issue(organization=org, name="okta")
        ScimGroup.objects.create(organization=org, display_name="Admins")
        KeyLifetimeRule.objects.create(team=team, max_key_lifetime_days=30)
    labels = {m._meta.label_lower for m in WHO_ADMINISTERS}
    changes = {
        c.object_type: c
        for c in ConfigChange.objects.filter(action="create", object_type__in=labels)
    }
    assert set(changes) == labels
    assert all(c.actor == "platform-root" for c in changes.values())
    assert {c.organization_id for c in changes.values()} == {org.pk}
    assert changes["identity.membership"].team_id == team.pk
    text = json.dumps([c.changes for c in changes.values()])
    assert "oidc-s3cr3t" not in text
    assert issued.secret not in text and issued.token.digest not in text


@pytest.mark.django_db
def test_admin_tokens_are_in_the_trail_without_their_digest():
    org = Organization.objects.create(name="trail-tokens")
    with changes_by("ops-bootstrap"):
        issued = admin_token_issue(name="ci", organization=org)
    [change] = ConfigChange.objects.filter(object_type="api.admintoken", action="create")
    assert change.actor == "ops-bootstrap"
    assert issued.token.digest not in json.dumps(change.changes)
    assert issued.secret not in json.dumps(change.changes)


@pytest.mark.django_db
@pytest.mark.parametrize("model", list(CASES), ids=lambda m: m._meta.label)
def test_admin_create_update_delete_is_in_the_trail(admin_client, admin_user, base, model):
    case = CASES[model]
    before = set(model.objects.values_list("pk", flat=True))

    response = post_form(admin_client, admin_url(model, "add"), case.add(base))
    assert response.status_code in (200, 302)  # a new key answers with its show-once page
    (pk,) = set(model.objects.values_list("pk", flat=True)) - before
    (created,) = trail_of(model, pk, "create")
    assert_by_admin(created, admin_user)
    assert created.object_repr  # str() of the object as saved
    for name in case.add(base):
        assert name in created.changes, name

    obj = model.objects.get(pk=pk)
    response = post_form(admin_client, admin_url(model, "change", pk), case.change(base, obj))
    assert response.status_code == 302
    (updated,) = trail_of(model, pk, "update")
    assert_by_admin(updated, admin_user)
    after = base.model2.pk if model is ModelAccess else case.after
    assert updated.changes[case.field]["after"] == after
    assert updated.changes[case.field]["before"] != after
    assert updated.request_id != created.request_id  # one per request

    response = admin_client.post(admin_url(model, "delete", pk), {"post": "yes"})
    assert response.status_code == 302
    assert not model.objects.filter(pk=pk).exists()
    (deleted,) = trail_of(model, pk, "delete")
    assert_by_admin(deleted, admin_user)
    assert deleted.object_repr
    assert deleted.changes[case.field]["before"] == after
    assert deleted.changes[case.field]["after"] is None


@pytest.mark.django_db
def test_model_fallbacks_edited_inline_are_in_the_trail(admin_client, admin_user, base):
    url = admin_url(Model, "change", base.model.pk)
    response = post_form(
        admin_client,
        url,
        {
            "fallbacks-TOTAL_FORMS": "1",
            "fallbacks-0-model": str(base.model.pk),
            "fallbacks-0-fallback": str(base.model2.pk),
            "fallbacks-0-position": "1",
        },
    )
    assert response.status_code == 302
    fallback = ModelFallback.objects.get()
    (created,) = trail_of(ModelFallback, fallback.pk, "create")
    assert_by_admin(created, admin_user)
    assert created.changes["fallback"] == {"before": None, "after": base.model2.pk}
    assert created.organization_id is None  # platform-wide

    response = post_form(admin_client, url, {"fallbacks-0-position": "2"})
    assert response.status_code == 302
    (updated,) = trail_of(ModelFallback, fallback.pk, "update")
    assert updated.changes == {"position": {"before": 1, "after": 2}}

    response = post_form(admin_client, url, {"fallbacks-0-DELETE": "on"})
    assert response.status_code == 302
    (deleted,) = trail_of(ModelFallback, fallback.pk, "delete")
    assert_by_admin(deleted, admin_user)
    # The model itself did not change: saving its page records nothing for it.
    assert not trail_of(Model, base.model.pk, "update")


@pytest.mark.django_db
def test_content_capture_rules_are_in_the_trail(admin_user, base):
    """Not in the admin yet: the same receivers, attributed with changes_by."""
    with changes_by(admin_user):
        rule = ContentCapture.objects.create(project=base.project, mode="full")
        rule.mode = "redacted"
        rule.save()
        pk = rule.pk
        rule.delete()
    for action in ("create", "update", "delete"):
        (change,) = trail_of(ContentCapture, pk, action)
        assert (change.actor, change.actor_user_id) == (admin_user.username, admin_user.pk)
        assert change.organization_id == base.org.pk
    (update,) = trail_of(ContentCapture, pk, "update")
    assert update.changes == {"mode": {"before": "full", "after": "redacted"}}


@pytest.mark.django_db
def test_secrets_never_appear_in_the_trail(admin_client, admin_user, base):
    upstream, rotated, webhook = (
        "sk-upstream-plain-5e1f",
        "sk-upstream-new-77aa",
        "whsec-plain-9c2d",
    )
    assert post_form(admin_client, admin_url(Provider, "add"), CASES[Provider].add(base))
    provider = Provider.objects.get(name="vllm")
    for value in (upstream, rotated):
        response = post_form(
            admin_client, admin_url(Provider, "change", provider.pk), {"api_key": value}
        )
        assert response.status_code == 302
    response = post_form(
        admin_client,
        admin_url(Organization, "change", base.org.pk),
        {"alert_webhook_url": "https://hooks.example.test/x", "alert_webhook_secret": webhook},
    )
    assert response.status_code == 302
    key = base.issued.key
    first_digest = key.digest
    response = admin_client.post(
        admin_url(VirtualKey, "changelist"),
        {"action": "rotate_key", "_selected_action": [key.pk]},
    )
    assert response.status_code == 200  # the show-once page of the new secret
    key.refresh_from_db()
    provider.refresh_from_db()
    base.org.refresh_from_db()
    assert provider.api_key == rotated and base.org.alert_webhook_secret == webhook

    secrets = {
        "provider api_key": upstream,
        "rotated api_key": rotated,
        "provider ciphertext": raw_column(provider, "api_key"),
        "webhook secret": webhook,
        "webhook ciphertext": raw_column(base.org, "alert_webhook_secret"),
        "key digest": key.digest,
        "previous key digest": first_digest,
        "issued key secret": base.issued.secret,
        "vllm add api_key": "sk-vllm-plaintext",
    }
    text = trail_text()
    for name, value in secrets.items():
        assert value not in text, name

    # What is recorded instead: that the secret changed, by whom.
    api_key_changes = [
        c.changes["api_key"]
        for c in trail_of(Provider, provider.pk, "update")
        if "api_key" in c.changes
    ]
    assert api_key_changes == ["changed", "changed"]
    (org_change,) = trail_of(Organization, base.org.pk, "update")
    assert org_change.changes["alert_webhook_secret"] == "changed"
    assert org_change.changes["alert_webhook_url"]["after"] == "https://hooks.example.test/x"
    (rotation,) = trail_of(VirtualKey, key.pk, "update")
    assert_by_admin(rotation, admin_user)
    assert rotation.changes["digest"] == "changed"
    assert rotation.changes["previous_digest"] == "changed"
    assert rotation.changes["prefix"]["after"] == key.prefix  # the visible part is fine

    # Nor in the trail's admin pages.
    pages = [admin_url(ConfigChange, "changelist")] + [
        admin_url(ConfigChange, "change", pk)
        for pk in ConfigChange.objects.values_list("pk", flat=True)
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for name, value in secrets.items():
            assert value not in html, f"{name} in {url}"


@pytest.mark.django_db
def test_changes_by_sets_the_actor(admin_user):
    org = org_create()
    (change,) = trail_of(Organization, org.pk, "create")
    assert (change.actor, change.actor_user_id, change.request_id) == ("system", None, "")

    with changes_by("odock_apply"):
        team = team_create(org)
        with changes_by(admin_user):
            project = project_create(team)
        key = key_create(project)
    assert trail_of(Team, team.pk, "create")[0].actor == "odock_apply"
    assert trail_of(VirtualKey, key.key.pk, "create")[0].actor == "odock_apply"
    inner = trail_of(Project, project.pk, "create")[0]
    assert (inner.actor, inner.actor_user_id) == (admin_user.username, admin_user.pk)
    assert inner.organization_id == org.pk

    org.display_name = "after the block"
    org.save()
    assert trail_of(Organization, org.pk, "update")[0].actor == "system"


@pytest.mark.django_db
def test_odock_apply_wrapped_in_changes_by(capsys):
    """What odock_apply leaves once it runs inside changes_by("odock_apply"); re-applying
    the same file changes nothing, so it records nothing."""
    path = str(FIXTURES / "architecture.yaml")
    with changes_by("odock_apply"):
        call_command("odock_apply", path)
    changes = list(ConfigChange.objects.all())
    assert {c.actor for c in changes} == {"odock_apply"}
    types = {c.object_type for c in changes}
    assert {"providers.provider", "keys.virtualkey", "policies.budget", "tenancy.team"} <= types
    text = trail_text()
    for secret in ("sk-upstream", "sk-ant-upstream", "sk-odock-test-assistant"):
        assert secret not in text

    with changes_by("odock_apply"):
        call_command("odock_apply", path)
    assert ConfigChange.objects.count() == len(changes)


@pytest.mark.django_db
def test_a_cascade_delete_records_every_removed_rule(admin_user, base):
    team = team_create(base.org, "doomed")
    budget = Budget.objects.create(team=team, limit_usd=Decimal("5"))
    limit = RateLimit.objects.create(team=team, rpm=10)
    removed = ((Team, team.pk), (Budget, budget.pk), (RateLimit, limit.pk))
    with changes_by(admin_user):
        team.delete()
    for model, pk in removed:
        (change,) = trail_of(model, pk, "delete")
        assert change.actor == admin_user.username
        assert change.organization_id == base.org.pk


@pytest.mark.django_db
def test_management_api_changes_name_the_admin_token(client, base):
    issued = admin_token_issue(name="ci-bot", organization=base.org)
    response = client.post(
        "/api/v1/keys",
        {"project_id": base.project.pk, "name": "from-api"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {issued.secret}", "X-Request-ID": "req-from-ci-42"},
    )
    assert response.status_code == 201, response.content
    assert response.headers["X-Request-ID"] == "req-from-ci-42"
    key = VirtualKey.objects.get(name="from-api")
    (change,) = trail_of(VirtualKey, key.pk, "create")
    assert (change.actor, change.actor_user_id) == ("api token ci-bot", None)
    assert change.request_id == "req-from-ci-42"
    assert change.organization_id == base.org.pk
    assert issued.secret not in trail_text()


@pytest.mark.django_db
def test_trail_admin_is_read_only_and_filters(admin_client, admin_user, base):
    with changes_by(admin_user):
        RateLimit.objects.create(project=base.project, rpm=5)
    changelist = admin_url(ConfigChange, "changelist")
    assert admin_client.get(admin_url(ConfigChange, "add")).status_code == 403
    some = ConfigChange.objects.first()
    response = admin_client.post(admin_url(ConfigChange, "delete", some.pk), {"post": "yes"})
    assert response.status_code == 403
    assert ConfigChange.objects.filter(pk=some.pk).exists()

    def rows(query: str) -> set[int]:
        response = admin_client.get(f"{changelist}?{query}")
        assert response.status_code == 200, query
        return {obj.pk for obj in response.context["cl"].result_list}

    by_admin = set(ConfigChange.objects.filter(actor="admin").values_list("pk", flat=True))
    assert by_admin and rows("actor=admin") == by_admin
    assert rows("type=policies.ratelimit") == set(
        ConfigChange.objects.filter(object_type="policies.ratelimit").values_list("pk", flat=True)
    )
    assert rows("action=create") == set(
        ConfigChange.objects.filter(action="create").values_list("pk", flat=True)
    )
    assert rows("actor=system&type=tenancy.organization") == set(
        ConfigChange.objects.filter(actor="system", object_type="tenancy.organization").values_list(
            "pk", flat=True
        )
    )
    assert (
        rows(
            "created_at__gte=2000-01-01T00:00:00%2B00:00&created_at__lt=2000-01-02T00:00:00%2B00:00"
        )
        == set()
    )


def _actor_view(request: HttpRequest) -> HttpResponse:
    context = change_context()
    actor = context.resolve_actor()
    return HttpResponse(f"{actor.name}|{actor.user_id}|{context.request_id}|{context.client_ip}")


def _request(user: Any, **headers: str) -> HttpRequest:
    request = RequestFactory().get("/admin/", headers=headers)
    request.user = user
    return request


def test_middleware_sets_the_request_context_and_clears_it():
    user = User(pk=41, username="carol")
    response = ChangeContextMiddleware(_actor_view)(_request(user))
    actor, user_id, request_id, ip = response.content.decode().split("|")
    assert (actor, user_id, ip) == ("carol", "41", "127.0.0.1")
    assert response.headers["X-Request-ID"] == request_id and len(request_id) == 32
    assert change_context().resolve_actor().name == "system"  # nothing leaks out

    anonymous = ChangeContextMiddleware(_actor_view)(_request(AnonymousUser()))
    assert anonymous.content.decode().startswith("system|None|")
    # A request id that is not a plain token is replaced, never stored as given.
    odd = ChangeContextMiddleware(_actor_view)(_request(user, X_Request_ID="a b<script>"))
    assert "<script>" not in odd.content.decode()


def test_middleware_context_reaches_sync_views_under_asgi():
    """Async chain (ASGI): the sync view runs in a worker thread and still sees it."""
    middleware = ChangeContextMiddleware(sync_to_async(_actor_view))
    response = asyncio.run(middleware(_request(User(pk=7, username="dave"), X_Request_ID="r-1")))
    assert response.content.decode() == "dave|7|r-1|127.0.0.1"
    assert response.headers["X-Request-ID"] == "r-1"
