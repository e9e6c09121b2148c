"""The "onboard a provider and model" flow over real HTTP, and its "test this deployment"
button against the project's fake providers: an answer, a refused key, an unreachable
and a silent upstream (each a clear error in bounded time), never the provider's key."""

from __future__ import annotations

import socket
import time

import pytest

from apps.compliance.models import ConfigChange
from apps.identity.models import Role
from apps.onboarding.probe import deployment_probe
from apps.providers.models import Deployment, Model, Provider
from fakes.registry import FAKES
from tests.factories import model_create, org_create, provider_create
from tests.onboarding.conftest import csrf_token

URL = "/admin/onboarding/new-provider/"
UPSTREAM_KEY = "sk-upstream-secret"  # what tests/conftest.py's fake_upstream requires


def form(api_base: str, /, **values: str) -> dict[str, str]:
    return {
        "provider_name": "openai-main",
        "kind": "openai",
        "api_base": api_base,
        "api_key": UPSTREAM_KEY,
        "options": "",
        "model_name": "gpt-4o-mini",
        "upstream_model": "gpt-4o-mini",
        "input_per_mtok": "0.15",
        "output_per_mtok": "0.60",
        **values,
    }


def written() -> tuple[int, int, int, int]:
    return (
        Provider.objects.count(),
        Model.objects.count(),
        Deployment.objects.count(),
        ConfigChange.objects.count(),
    )


def press_test(session, url: str):
    """The "Test this deployment" button: a POST with the page's CSRF token."""
    page = session.get(url)
    assert page.status_code == 200
    return session.http.post(url, data={"csrfmiddlewaretoken": csrf_token(page.text)})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: connections are refused


def test_a_platform_admin_onboards_and_tests_a_deployment(live_site, sign_in, fake_upstream):
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    answer = root.submit(URL, form(fake_upstream.url))
    assert answer.status_code == 302, answer.text[:2000]
    deployment = Deployment.objects.select_related("provider", "model").get()
    assert answer.headers["location"] == (
        f"/admin/onboarding/deployments/{deployment.pk}/test/?created=1"
    )
    assert deployment.provider.api_key == UPSTREAM_KEY  # stored (encrypted at rest)
    assert (deployment.model.name, deployment.upstream_model) == ("gpt-4o-mini", "gpt-4o-mini")
    changes = ConfigChange.objects.filter(actor="root").values_list("object_type", "actor_role")
    assert sorted(changes) == [
        ("providers.deployment", "platform_admin"),
        ("providers.model", "platform_admin"),
        ("providers.provider", "platform_admin"),
    ]

    url = answer.headers["location"]
    page = root.get(url)
    assert "Provider, model and deployment created." in page.text
    assert "set (write-only: never shown)" in page.text and UPSTREAM_KEY not in page.text

    tested = press_test(root, url)
    assert tested.status_code == 200
    assert 'id="test-result" data-ok="1"' in tested.text
    assert "It answered" in tested.text and "tok0 tok1" in tested.text  # the fake's answer
    assert UPSTREAM_KEY not in tested.text
    [call] = fake_upstream.requests
    assert call["path"] == "/v1/chat/completions"
    assert call["json"]["model"] == "gpt-4o-mini" and call["json"]["max_tokens"] == 16


def test_a_refused_key_is_a_clear_error_without_the_key(live_site, sign_in, fake_upstream):
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    answer = root.submit(URL, form(fake_upstream.url, api_key="sk-wrong-key-123456"))
    tested = press_test(root, answer.headers["location"])
    assert 'data-ok="0"' in tested.text
    assert "The upstream provider refused the gateway&#x27;s credentials." in tested.text
    assert 'id="test-code">upstream_auth_failed<' in tested.text and "status 502" in tested.text
    assert "sk-wrong-key-123456" not in tested.text


def test_an_unreachable_upstream_is_a_clear_error(live_site, sign_in):
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    answer = root.submit(URL, form(f"http://127.0.0.1:{closed_port()}/v1"))
    started = time.monotonic()
    tested = press_test(root, answer.headers["location"])
    assert time.monotonic() - started < 5
    assert "The upstream provider could not be reached." in tested.text
    assert 'id="test-code">upstream_unreachable<' in tested.text


def test_a_silent_upstream_is_cut_off_in_bounded_time(live_site, sign_in, fake_upstream, settings):
    settings.ODOCK_DEPLOYMENT_TEST_TIMEOUT_SECONDS = 1.0
    fake_upstream.behavior.hang = True
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    answer = root.submit(URL, form(fake_upstream.url))
    started = time.monotonic()
    tested = press_test(root, answer.headers["location"])
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 4, elapsed
    assert "The upstream provider did not answer in time." in tested.text
    assert 'id="test-code">upstream_timeout<' in tested.text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api_base": "ftp://example.com/v1"}, "Enter a valid http(s) URL"),
        ({"api_base": "http://exa mple.com"}, "A URL cannot contain spaces."),
        ({"options": "region"}, "Line 1: write name=value"),
        ({"options": "api_version=1\napi_version=2"}, "Line 2: api_version is given twice."),
        ({"kind": "nope"}, "Select a valid choice."),
        ({"input_per_mtok": "-1"}, "greater than or equal to 0"),
        ({"model_name": ""}, "This field is required."),
        ({"provider_name": "Has Spaces"}, "Enter a valid “slug”"),
    ],
)
def test_bad_input_writes_nothing_and_never_echoes_the_key(
    live_site, sign_in, fake_upstream, values, message
):
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    before = written()
    answer = root.submit(URL, form(fake_upstream.url, **values))
    assert answer.status_code == 200
    assert message in answer.text, answer.text[-3000:]
    assert "Nothing was created" in answer.text
    assert UPSTREAM_KEY not in answer.text  # the password field is never filled back
    assert written() == before


def test_existing_names_are_refused_not_overwritten(live_site, sign_in, fake_upstream):
    provider_create(fake_upstream.url, name="openai-main", api_key="sk-original-key")
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    before = written()
    answer = root.submit(URL, form(fake_upstream.url))
    assert "A provider named &#x27;openai-main&#x27; exists." in answer.text
    assert written() == before
    assert Provider.objects.get(name="openai-main").api_key == "sk-original-key"

    model_create("gpt-4o-mini", Provider.objects.get())
    before = written()
    answer = root.submit(URL, form(fake_upstream.url, provider_name="second"))
    assert "A model named &#x27;gpt-4o-mini&#x27; exists" in answer.text
    assert written() == before


@pytest.mark.parametrize("role", [Role.ORG_ADMIN, Role.TEAM_ADMIN, Role.FINANCE, Role.AUDITOR])
def test_only_platform_admins_onboard_or_test_providers(live_site, sign_in, fake_upstream, role):
    """The catalog is platform-wide: an org admin (let alone finance, an auditor or a
    team admin) may read it in the admin but neither add to it nor spend on it."""
    acme = org_create("acme")
    if role == Role.TEAM_ADMIN:
        from tests.factories import team_create

        where = {"team": team_create(acme)}
    else:
        where = {"organization": acme}
    person = sign_in("bob", role=role, **where)
    assert person.get(URL).status_code == 403
    model = model_create("gpt-4o-mini", provider_create(fake_upstream.url))
    test_url = f"/admin/onboarding/deployments/{model.deployments.get().pk}/test/"
    assert person.get(test_url).status_code == 403
    token = csrf_token(person.get("/admin/password_change/").text)
    before = written()
    assert (
        person.http.post(URL, data={"csrfmiddlewaretoken": token, **form("http://x")}).status_code
        == 403
    )
    assert person.http.post(test_url, data={"csrfmiddlewaretoken": token}).status_code == 403
    assert written() == before
    assert fake_upstream.requests == []  # nothing was sent upstream


@pytest.mark.parametrize("kind", list(FAKES))
def test_the_probe_speaks_every_provider_kind(transactional_db, kind):
    """The probe is the provider adapter itself: each kind against its own fake (which
    validates what it receives), then the same with a wrong key."""
    fake = FAKES[kind]
    server = fake.start("upstream-secret-probe-0f3a9")
    try:
        provider = provider_create(
            server.url, name=kind, api_key="upstream-secret-probe-0f3a9", kind=kind
        )
        provider.options = dict(fake.options)
        provider.save()
        model = model_create("m", provider, upstream_model=fake.upstream_model)
        deployment = Deployment.objects.select_related("provider", "model").get(model=model)
        result = deployment_probe(deployment, timeout=5)
        assert result.ok, result
        assert result.message and result.output_tokens > 0
        provider.api_key = "wrong-secret-never-shown"
        provider.save()
        deployment = Deployment.objects.select_related("provider", "model").get(model=model)
        failed = deployment_probe(deployment, timeout=5)
        assert not failed.ok and failed.status in (401, 403, 502), failed
        assert "wrong-secret-never-shown" not in failed.message
    finally:
        server.stop()
