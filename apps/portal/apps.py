from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The self-service portal for members: their own keys, spend and records."""

    name = "apps.portal"
    label = "portal"
    verbose_name = "Self-service portal"
