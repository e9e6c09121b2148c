from __future__ import annotations

from django.apps import AppConfig


class OnboardingConfig(AppConfig):
    """Guided creation flows (issue 16): a new team with its budget, first project and
    first key in one form; a provider and model onboarded and tested in another."""

    name = "apps.onboarding"
    label = "onboarding"
    verbose_name = "Guided creation"
