from django.apps import AppConfig


class ScimAppConfig(AppConfig):
    name = "apps.scim"
    label = "scim"
    verbose_name = "SCIM provisioning"
