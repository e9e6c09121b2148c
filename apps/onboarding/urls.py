from __future__ import annotations

from django.urls import path

from apps.onboarding import views

app_name = "onboarding"

urlpatterns = [
    path("new-team/", views.new_team, name="new-team"),
    path("new-provider/", views.new_provider, name="new-provider"),
    path("deployments/<int:pk>/test/", views.deployment_test, name="deployment-test"),
]
