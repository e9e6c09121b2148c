"""Celery app: workers roll up cost and build reports (``celery -A odock worker``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")

app = Celery("odock")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Separate queues so slow reports never delay alerts.
app.conf.task_routes = {"policies.budget_alert_send": {"queue": "alerts"}}
# The one place that defines periodic jobs.
app.conf.beat_schedule = {}
