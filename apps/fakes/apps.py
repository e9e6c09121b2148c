from django.apps import AppConfig


class FakesConfig(AppConfig):
    name = "apps.fakes"
    label = "fakes"
