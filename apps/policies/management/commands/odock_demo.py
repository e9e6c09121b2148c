"""``manage.py odock_demo``: the demo set-up the README's run command relies on.

Idempotent: an admin user, a provider pointing at the fake upstream, priced models, the
demo organisation/team/project and a key whose secret is generated once and kept in
``VAR_DIR/demo_key`` (mode 0600), so every run prints the same key. Everything but the
user goes through ``config_apply``, the same path as ``odock_apply``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.keys.secrets import key_secret_generate
from apps.policies.config import ConfigError, ConfigFile, config_apply
from apps.providers.models import Deployment

DEMO_PROVIDER = "demo-fake"
DEMO_MODEL = "demo-model"
# A familiar alias for SDK examples, declared only while it is the demo's own: the file's
# deployment list replaces a model's deployments, and a real gpt-4o-mini must survive.
ALIAS_MODEL = "gpt-4o-mini"


def alias_is_free() -> bool:
    served_elsewhere = Deployment.objects.filter(model__name=ALIAS_MODEL).exclude(
        provider__name=DEMO_PROVIDER
    )
    return not served_elsewhere.exists()


def demo_key_secret(path: Path) -> str:
    """The demo key's secret: read from ``path``, or generated and written there (0600)."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = key_secret_generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def demo_config(*, upstream: str, key_secret: str, with_alias: bool) -> ConfigFile:
    return ConfigFile.model_validate(
        {
            "providers": [
                {
                    "name": DEMO_PROVIDER,
                    "kind": "openai",
                    "api_base": upstream,
                    "api_key": "sk-fake-upstream",
                }
            ],
            "models": [
                {
                    "name": name,
                    "price": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"},
                    "deployments": [{"provider": DEMO_PROVIDER, "model": "gpt-4o-mini"}],
                }
                for name in ([DEMO_MODEL, ALIAS_MODEL] if with_alias else [DEMO_MODEL])
            ],
            "organizations": [
                {
                    "name": "demo",
                    "teams": [
                        {
                            "name": "demo-team",
                            "projects": [
                                {
                                    "name": "demo-project",
                                    "keys": [{"name": "demo-key", "secret": key_secret}],
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    )


class Command(BaseCommand):
    help = "Set up the demo (admin user, fake provider, models, hierarchy, key); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--upstream",
            default="http://127.0.0.1:9001/v1",
            help="base URL of the (fake) OpenAI-compatible upstream",
        )
        parser.add_argument(
            "--admin-password",
            default="odock-admin",
            help="password for the 'admin' user, used only when creating it",
        )

    def handle(self, *args: Any, upstream: str, admin_password: str, **options: Any) -> None:
        secret = demo_key_secret(Path(settings.VAR_DIR) / "demo_key")
        try:
            config = demo_config(upstream=upstream, key_secret=secret, with_alias=alias_is_free())
            config_apply(config, stdout=self.stdout)
        except ConfigError as exc:
            raise CommandError("demo set-up failed:\n" + "\n".join(exc.errors)) from None
        users = get_user_model().objects
        if users.filter(username="admin").exists():
            self.stdout.write("admin user: admin (exists, password unchanged)")
        else:
            users.create_superuser(username="admin", email="", password=admin_password)
            self.stdout.write("admin user: admin (created)")
        self.stdout.write(f"demo key: {secret}")
