from __future__ import annotations

from django.urls import path

from apps.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard_page, name="index"),
    path("data/<slug:chart>.json", views.chart_data, name="data"),
]
