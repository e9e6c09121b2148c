"""Model aliases end to end: the openai and anthropic SDKs → gateway → fake upstream. A name
a client sends (Claude Code's defaults, dated forms) is served, authorised, limited and
recorded as the model it maps to, while the record keeps the name the client asked for."""

from __future__ import annotations

import anthropic
import openai
import pytest

from apps.policies.models import ModelAlias, RateLimit
from tests.factories import (
    allow_models,
    key_create,
    model_create,
    project_create,
    provider_create,
    records_wait,
)

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def served(fake_upstream):
    """Two served models on the fake upstream, a project and its organisation."""
    provider = provider_create(fake_upstream.url, name="up")
    big = model_create("my-model", provider, upstream_model="my-model-up")
    small = model_create("small", provider, upstream_model="small-up")
    project = project_create()
    return big, small, project


def client_for(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)


def chat(gateway, secret: str, model: str):
    return client_for(gateway, secret).chat.completions.create(model=model, messages=MESSAGES)


def authorize_reason(record) -> str:
    [reason] = [d[2] for d in record.decisions if d[0] == "authorize"]
    return reason


def test_org_alias_is_served_as_its_model_and_recorded_with_both_names(
    gateway, fake_upstream, served
):
    big, _small, project = served
    ModelAlias.objects.create(
        organization=project.team.organization, alias="claude-sonnet-5", model=big
    )
    issued = key_create(project)
    gateway.snapshots.reload()

    answer = chat(gateway, issued.secret, "claude-sonnet-5")

    assert answer.choices[0].message.content
    assert fake_upstream.requests[-1]["json"]["model"] == "my-model-up"
    [record] = records_wait(gateway, 1)
    assert (record.model_requested, record.model_served) == ("claude-sonnet-5", "my-model")
    assert record.status_code == 200 and record.cost_usd > 0
    assert authorize_reason(record) == "model my-model (alias claude-sonnet-5 → my-model)"


def test_key_alias_overrides_the_organisation_s(gateway, fake_upstream, served):
    big, small, project = served
    org = project.team.organization
    ModelAlias.objects.create(organization=org, alias="claude-sonnet-5", model=small)
    own = key_create(project)
    ModelAlias.objects.create(key=own.key, alias="claude-sonnet-5", model=big)
    other = key_create(project)
    gateway.snapshots.reload()

    chat(gateway, own.secret, "claude-sonnet-5")
    assert fake_upstream.requests[-1]["json"]["model"] == "my-model-up"
    chat(gateway, other.secret, "claude-sonnet-5")
    assert fake_upstream.requests[-1]["json"]["model"] == "small-up"


def test_pattern_maps_a_dated_form_on_the_anthropic_messages_endpoint(
    gateway, fake_upstream, served
):
    big, small, project = served
    team = project.team
    ModelAlias.objects.create(team=team, alias="claude-*", model=small)
    ModelAlias.objects.create(team=team, alias="claude-sonnet-*", model=big)
    issued = key_create(project)
    gateway.snapshots.reload()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=issued.secret, max_retries=0)

    message = client.messages.create(
        model="claude-sonnet-5-20261001", max_tokens=64, messages=MESSAGES
    )

    assert message.content[0].text
    # The longest pattern wins: claude-sonnet-* over claude-*.
    assert fake_upstream.requests[-1]["json"]["model"] == "my-model-up"
    client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)
    assert fake_upstream.requests[-1]["json"]["model"] == "small-up"
    first, _second = records_wait(gateway, 2)
    assert (first.model_requested, first.model_served) == ("claude-sonnet-5-20261001", "my-model")


def test_a_served_model_s_own_name_is_never_redirected_by_a_pattern(gateway, fake_upstream, served):
    big, _small, project = served
    ModelAlias.objects.create(project=project, alias="s*", model=big)
    issued = key_create(project)
    gateway.snapshots.reload()

    chat(gateway, issued.secret, "small")
    assert fake_upstream.requests[-1]["json"]["model"] == "small-up"
    chat(gateway, issued.secret, "sonnet")
    assert fake_upstream.requests[-1]["json"]["model"] == "my-model-up"


def test_alias_to_a_model_the_key_may_not_use_is_refused_like_a_direct_request(
    gateway, fake_upstream, served
):
    big, small, project = served
    ModelAlias.objects.create(project=project, alias="claude-opus-4-8", model=big)
    issued = key_create(project)
    allow_models(issued.key, small)
    gateway.snapshots.reload()

    for name in ("my-model", "claude-opus-4-8"):
        with pytest.raises(openai.PermissionDeniedError) as info:
            chat(gateway, issued.secret, name)
        assert info.value.body["code"] == "model_not_allowed"
        assert name in info.value.body["message"]
    assert not fake_upstream.requests
    _direct, aliased = records_wait(gateway, 2)
    assert aliased.model_requested == "claude-opus-4-8" and aliased.status_code == 403
    assert authorize_reason(aliased) == (
        "model my-model not allowed (alias claude-opus-4-8 → my-model)"
    )


def test_unknown_names_are_refused_as_before(gateway, served):
    _big, small, project = served
    ModelAlias.objects.create(organization=project.team.organization, alias="a", model=small)
    open_key = key_create(project)
    restricted = key_create(project)
    allow_models(restricted.key, small)
    gateway.snapshots.reload()

    with pytest.raises(openai.NotFoundError) as info:
        chat(gateway, open_key.secret, "claude-sonnet-5")
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, restricted.secret, "claude-sonnet-5")


def test_a_rate_limit_on_the_target_model_counts_requests_through_its_alias(gateway, served):
    big, _small, project = served
    ModelAlias.objects.create(project=project, alias="claude-sonnet-5", model=big)
    issued = key_create(project)
    RateLimit.objects.create(key=issued.key, model=big, rpm=1)
    gateway.snapshots.reload()

    chat(gateway, issued.secret, "claude-sonnet-5")
    with pytest.raises(openai.RateLimitError):
        chat(gateway, issued.secret, "my-model")


def test_the_model_list_shows_exact_aliases_of_usable_models_and_retrieve_resolves_them(
    gateway, served
):
    big, small, project = served
    ModelAlias.objects.create(project=project, alias="claude-sonnet-5", model=big)
    ModelAlias.objects.create(project=project, alias="claude-haiku-5", model=small)
    ModelAlias.objects.create(project=project, alias="claude-opus-*", model=small)
    restricted = key_create(project)
    allow_models(restricted.key, small)
    gateway.snapshots.reload()
    client = client_for(gateway, restricted.secret)

    listed = [m.id for m in client.models.list()]

    # The alias of a model the key may not use is as invisible as the model itself; a
    # pattern cannot be listed but still resolves.
    assert listed == ["small", "claude-haiku-5"]
    assert client.models.retrieve("claude-haiku-5").id == "claude-haiku-5"
    assert client.models.retrieve("claude-opus-5-5").id == "claude-opus-5-5"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("claude-sonnet-5")
