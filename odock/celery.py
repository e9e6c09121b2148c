"""Celery app: workers roll up cost and build reports (``celery -A odock worker``)."""

import os

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")

app = Celery("odock")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Separate queues so slow reports never delay alerts. Declared here so a plain
# ``celery -A odock worker`` consumes all of them; ``-Q`` splits them across workers.
# Each with its own exchange and routing key, so a routed task lands in exactly one.
app.conf.task_queues = [
    Queue(name, Exchange(name), routing_key=name) for name in ("celery", "alerts", "rollups")
]
app.conf.task_routes = {
    "policies.budget_alert_send": {"queue": "alerts"},
    "policies.budget_spend_rollup": {"queue": "rollups"},
    "policies.spend_reconcile": {"queue": "rollups"},
}
# The one place that defines periodic jobs. Each takes a cluster lock, so duplicate
# deliveries (two beats, acks_late redelivery) do the work once; ``expires`` drops a
# tick that waited past the next one.
app.conf.beat_schedule = {
    "budget-spend-rollup": {
        "task": "policies.budget_spend_rollup",
        "schedule": crontab(minute="*"),
        "options": {"expires": 55},
    },
    "spend-reconcile": {
        "task": "policies.spend_reconcile",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 290},
    },
}
