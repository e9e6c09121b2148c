"""Seed a benchmark database: one org/team/project/key and a model on the fake upstream;
with --governance typical|full, limits large enough never to refuse, so every request
pays the governance cost without being turned away. Prints the key's secret."""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--model", default="demo-model")
    parser.add_argument("--governance", choices=("none", "typical", "full"), default="none")
    parser.add_argument("--failing-primary", default="", help="URL of an always-failing fake")
    parser.add_argument(
        "--guardrails", action="store_true", help="every built-in detector on, at the org"
    )
    parser.add_argument(
        "--provider-kind",
        choices=("openai", "openai_compatible"),
        default="openai",
        help="openai: /v1/responses passes through natively; openai_compatible: translated",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from apps.keys.services import key_issue
    from apps.policies.models import Budget, RateLimit
    from apps.providers.models import Deployment, Model, Provider
    from apps.tenancy.models import Organization, Project, Team

    provider = Provider.objects.create(
        name="bench-fake", kind=args.provider_kind, api_base=args.upstream
    )
    model = Model.objects.create(
        name=args.model, input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60")
    )
    if args.failing_primary:  # tried first, fails; the healthy fake becomes the fallback
        failing = Provider.objects.create(
            name="bench-failing", kind="openai", api_base=args.failing_primary
        )
        Deployment.objects.create(model=model, provider=failing, upstream_model=args.model)
    Deployment.objects.create(
        model=model,
        provider=provider,
        upstream_model=args.model,
        role="fallback" if args.failing_primary else "primary",
    )
    org = Organization.objects.create(name="bench")
    team = Team.objects.create(organization=org, name="bench-team")
    project = Project.objects.create(team=team, name="bench-project")
    issued = key_issue(project=project, name="bench-key")
    if args.governance == "full":  # every kind of limit at every level: 16 counters
        for field, obj in (
            ("organization", org),
            ("team", team),
            ("project", project),
            ("key", issued.key),
        ):
            Budget.objects.create(**{field: obj}, limit_usd=Decimal("1000000"), period="daily")
            RateLimit.objects.create(
                **{field: obj}, rpm=100_000_000, tpm=10_000_000_000, max_concurrency=100_000
            )
    elif args.governance == "typical":  # a team and a key budget, a team RPM: 3 counters
        Budget.objects.create(team=team, limit_usd=Decimal("1000000"), period="monthly")
        Budget.objects.create(key=issued.key, limit_usd=Decimal("1000000"), period="daily")
        RateLimit.objects.create(team=team, rpm=100_000_000)
    if args.guardrails:  # all built-in detectors on prompt and answer; nothing in the bench
        # traffic matches, so every request pays the full scan and is still answered.
        from apps.guardrails.models import GuardrailRule

        for detector in ("email", "phone", "card", "iban", "us_ssn", "ip_address", "secrets"):
            GuardrailRule.objects.create(
                organization=org, detector=detector, action="redact", stage="both"
            )
        GuardrailRule.objects.create(organization=org, detector="prompt_injection", action="flag")
    print(issued.secret)


if __name__ == "__main__":
    main()
