from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "apps.identity"
    label = "identity"
    verbose_name = "People and roles"

    def ready(self) -> None:
        from apps.identity.signals import connect_user_signals

        connect_user_signals()
