"""Celery app: workers roll up cost and build reports (``celery -A odock worker``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")

app = Celery("odock")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The one place that defines periodic jobs; later issues add roll-ups and reconciliation.
app.conf.beat_schedule = {}
