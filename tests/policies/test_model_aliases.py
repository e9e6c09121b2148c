"""Model aliases: the precedence rules compiled into the snapshot, the model's validation,
``odock_apply`` (idempotent, errors by path, recorded in the change trail) and the admin."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError
from django.urls import reverse

from apps.compliance.models import ConfigChange
from apps.policies.compile import alias_table, snapshot_compile
from apps.policies.models import ModelAlias
from apps.providers.models import Model
from tests.factories import key_create, model_create, project_create, provider_create

# --- Precedence (pure) ----------------------------------------------------------------


def test_nearest_level_wins_per_alias_and_others_are_inherited():
    table = alias_table([{"a": "org-a", "b": "org-b"}, {}, {"a": "project-a"}, {}])
    assert table is not None
    assert (table.target("a"), table.target("b")) == ("project-a", "org-b")


def test_exact_beats_pattern_and_longest_pattern_wins_whatever_its_level():
    table = alias_table(
        [{"claude-sonnet-*": "org-sonnet"}, {}, {}, {"claude-*": "key-claude", "claude-x": "x"}]
    )
    assert table is not None
    assert table.target("claude-sonnet-5-20261001") == "org-sonnet"
    assert table.target("claude-haiku-4") == "key-claude"
    assert table.target("claude-x") == "x"
    assert table.target("gpt-5") is None


def test_no_alias_at_any_level_compiles_to_none():
    assert alias_table([{}, {}, {}, {}]) is None


# --- The model and the snapshot ---------------------------------------------------------


@pytest.fixture
def world(db):
    provider = provider_create("http://127.0.0.1:9/v1", name="up")
    big = model_create("my-model", provider)
    small = model_create("small", provider)
    project = project_create()
    return big, small, project


def test_compiled_per_key_with_inheritance(world):
    big, small, project = world
    org = project.team.organization
    ModelAlias.objects.create(organization=org, alias="claude-sonnet-5", model=small)
    ModelAlias.objects.create(team=project.team, alias="claude-haiku-*", model=small)
    issued = key_create(project)
    ModelAlias.objects.create(key=issued.key, alias="claude-sonnet-5", model=big)
    plain = key_create(project)

    keys = snapshot_compile().keys_by_digest
    own, other = keys[issued.key.digest].aliases, keys[plain.key.digest].aliases
    assert own.exact == {"claude-sonnet-5": "my-model"}
    assert own.patterns == (("claude-haiku-", "small"),)
    assert other.exact == {"claude-sonnet-5": "small"}


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("small", "is a model's own name"),
        ("claude-*-5", "prefix ending in one *"),
        ("*", "prefix ending in one *"),
        ("claude sonnet", "prefix ending in one *"),
    ],
)
def test_invalid_aliases_are_refused(world, alias, message):
    big, _small, project = world
    with pytest.raises(ValidationError) as info:
        ModelAlias(project=project, alias=alias, model=big).full_clean()
    assert message in str(info.value)


def test_an_alias_is_listed_once_per_level(world):
    big, small, project = world
    ModelAlias.objects.create(project=project, alias="claude-sonnet-5", model=big)
    with pytest.raises(ValidationError, match="already has this alias"):
        ModelAlias(project=project, alias="claude-sonnet-5", model=small).full_clean()
    # Another level may map the same alias.
    ModelAlias(team=project.team, alias="claude-sonnet-5", model=small).full_clean()


# --- odock_apply ----------------------------------------------------------------------

FILE = """
providers:
  - {name: up, kind: openai, api_base: "http://up.example:1/v1"}
models:
  - name: my-model
    price: {input_per_mtok: "1", output_per_mtok: "2"}
    deployments: [{provider: up, model: my-model-up}]
  - name: small
    price: {input_per_mtok: "1", output_per_mtok: "2"}
    deployments: [{provider: up, model: small-up}]
organizations:
  - name: acme
    model_aliases: {claude-sonnet-5: my-model, "claude-haiku-*": small}
    teams:
      - name: research
        projects:
          - name: lab
            keys:
              - name: k1
                secret: sk-odock-alias-test-key-1
                model_aliases: {claude-sonnet-5: small}
"""


def apply(tmp_path, text: str) -> str:
    from tests.factories import odock_apply_text

    return odock_apply_text(tmp_path, text)


@pytest.mark.django_db
def test_odock_apply_round_trip_is_idempotent_and_in_the_trail(tmp_path):
    out = apply(tmp_path, FILE)
    assert "created model alias on organization acme (claude-sonnet-5 → my-model)" in out
    rows = ModelAlias.objects.select_related("model", "organization", "key")
    assert sorted((r.level, r.alias, r.model.name) for r in rows) == [
        ("key:k1", "claude-sonnet-5", "small"),
        ("org:acme", "claude-haiku-*", "small"),
        ("org:acme", "claude-sonnet-5", "my-model"),
    ]
    trail = ConfigChange.objects.filter(object_type__endswith="modelalias", action="create")
    assert trail.count() == 3

    assert "no changes: created 0, updated 0, deleted 0" in apply(tmp_path, FILE)

    changed = FILE.replace('claude-sonnet-5: my-model, "claude-haiku-*": small', "x-1: small")
    out = apply(tmp_path, changed)
    assert "created 1" in out and "deleted 2" in out
    [key] = snapshot_compile().keys_by_digest.values()
    assert key.aliases.exact == {"x-1": "small", "claude-sonnet-5": "small"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (
            "{claude-sonnet-5: small}",
            "organizations[0].teams[0].projects[0].keys[0].model_aliases.claude-sonnet-5: "
            "unknown model 'nope'",
        ),
        (
            '"claude-haiku-*": small',
            "organizations[0].model_aliases.my-model: 'my-model' is a model's own name",
        ),
        ("claude-sonnet-5: my-model", "organizations[0].model_aliases"),
    ],
)
def test_bad_aliases_name_the_path_and_change_nothing(tmp_path, replace, expected):
    bad = {
        "{claude-sonnet-5: small}": "{claude-sonnet-5: nope}",
        '"claude-haiku-*": small': "my-model: small",
        "claude-sonnet-5: my-model": '"claude-*-5": my-model',
    }[replace]
    with pytest.raises(CommandError) as info:
        apply(tmp_path, FILE.replace(replace, bad))
    assert expected in str(info.value)
    assert not Model.objects.exists() and not ModelAlias.objects.exists()


# --- Admin ----------------------------------------------------------------------------


def test_admin_list_add_and_validation(admin_client, world):
    big, _small, project = world
    ModelAlias.objects.create(project=project, alias="claude-opus-*", model=big)
    assert admin_client.get(reverse("admin:policies_modelalias_changelist")).status_code == 200
    listing = admin_client.get(reverse("admin:policies_modelalias_changelist") + "?q=opus")
    assert "claude-opus-*" in listing.content.decode()
    url = reverse("admin:policies_modelalias_add")
    assert admin_client.get(url).status_code == 200

    refused = admin_client.post(url, {"team": project.team.pk, "alias": "small", "model": big.pk})
    assert refused.status_code == 200
    assert "an alias may not shadow it" in refused.content.decode()
    duplicate = admin_client.post(
        url, {"project": project.pk, "alias": "claude-opus-*", "model": big.pk}
    )
    assert "already maps claude-opus-*" in duplicate.content.decode()
    unknown = admin_client.post(url, {"team": project.team.pk, "alias": "x", "model": 999999})
    assert unknown.status_code == 200 and not ModelAlias.objects.filter(alias="x").exists()

    saved = admin_client.post(
        url, {"team": project.team.pk, "alias": "claude-sonnet-5", "model": big.pk}
    )
    assert saved.status_code == 302
    assert ModelAlias.objects.get(alias="claude-sonnet-5").level == f"team:{project.team.name}"


def test_level_page_shows_the_alias_inline(admin_client, world):
    big, _small, project = world
    ModelAlias.objects.create(project=project, alias="claude-opus-*", model=big)
    page = admin_client.get(reverse("admin:tenancy_project_change", args=[project.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "modelalias-TOTAL_FORMS" in html and "claude-opus-*" in html


def test_effective_policy_lists_the_aliases_with_the_level_each_comes_from(world):
    from apps.policies.selectors import effective_policy_for_key

    big, small, project = world
    issued = key_create(project)
    # The key's row is older than the organisation's: the nearest level wins, not the last row.
    ModelAlias.objects.create(key=issued.key, alias="a", model=big)
    ModelAlias.objects.create(organization=project.team.organization, alias="a", model=small)
    ModelAlias.objects.create(organization=project.team.organization, alias="b", model=small)

    policy = effective_policy_for_key(issued.key)

    assert policy["model_aliases"] == {
        "a": {"model": "my-model", "from": f"key:{issued.key.name}"},
        "b": {"model": "small", "from": f"org:{project.team.organization.name}"},
    }
