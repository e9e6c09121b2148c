"""odock_demo: sets up the demo once; re-runs print the same key and change nothing."""

from __future__ import annotations

import re
import stat
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from apps.core.models import config_version_current
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from apps.providers.models import Deployment, Model, Provider
from tests.factories import model_create, provider_create

DEMO_KEY = re.compile(r"^demo key: (sk-odock-\S+)$", re.MULTILINE)


def run_demo(*args: str) -> str:
    out = StringIO()
    call_command("odock_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.mark.django_db
def test_demo_sets_up_everything_once(var_dir, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = run_demo("--upstream", "http://127.0.0.1:9001/v1")
    version = config_version_current()

    [secret] = DEMO_KEY.findall(first)
    key_file = var_dir / "demo_key"
    assert key_file.read_text().strip() == secret
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = VirtualKey.objects.get(name="demo-key", project__name="demo-project")
    assert key.project.team.name == "demo-team" and key.project.team.organization.name == "demo"
    assert key_secret_matches(key=key, secret=secret) and key.digest != secret
    provider = Provider.objects.get(name="demo-fake")
    assert (provider.kind, provider.api_base, provider.api_key) == (
        "openai",
        "http://127.0.0.1:9001/v1",
        "sk-fake-upstream",
    )
    for name in ("demo-model", "gpt-4o-mini"):
        model = Model.objects.get(name=name)
        assert (str(model.input_per_mtok), str(model.output_per_mtok)) == ("0.150000", "0.600000")
        assert model.deployments.get().provider == provider
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("odock-admin")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = run_demo("--admin-password", "something-else")

    assert DEMO_KEY.findall(second) == [secret]
    assert "no changes" in second
    assert callbacks == [] and config_version_current() == version
    admin.refresh_from_db()
    assert admin.check_password("odock-admin")  # only set when creating


@pytest.mark.django_db
def test_demo_follows_a_new_upstream_url():
    run_demo("--upstream", "http://127.0.0.1:9001/v1")
    out = run_demo("--upstream", "http://127.0.0.1:9555/v1")

    assert Provider.objects.get(name="demo-fake").api_base == "http://127.0.0.1:9555/v1"
    assert "updated provider demo-fake (api_base)" in out
    assert Provider.objects.count() == 1


@pytest.mark.django_db
def test_demo_leaves_a_real_gpt_4o_mini_alone():
    real = provider_create("https://api.openai.com/v1", name="openai-real")
    model_create("gpt-4o-mini", real, input_per_mtok="0.20", output_per_mtok="0.80")

    run_demo()

    model = Model.objects.get(name="gpt-4o-mini")
    assert [d.provider.name for d in Deployment.objects.filter(model=model)] == ["openai-real"]
    assert str(model.input_per_mtok) == "0.200000"
    assert Model.objects.filter(name="demo-model").exists()
