from django.apps import AppConfig


class ConfigLogConfig(AppConfig):
    name = "apps.configlog"
    label = "configlog"
    default_auto_field = "django.db.models.BigAutoField"
