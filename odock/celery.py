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
    Queue(name, Exchange(name), routing_key=name)
    for name in ("celery", "alerts", "rollups", "reports")
]
app.conf.task_routes = {
    "policies.budget_alert_send": {"queue": "alerts"},
    "policies.budget_spend_rollup": {"queue": "rollups"},
    "policies.spend_reconcile": {"queue": "rollups"},
    "audit.retention_purge": {"queue": "rollups"},
    "responses.stored_response_purge": {"queue": "rollups"},
    "compliance.evidence_pack_build": {"queue": "reports"},
    "reports.usage_rollup": {"queue": "rollups"},
    "reports.usage_rollup_period": {"queue": "rollups"},
    "reports.report_schedules_enqueue_due": {"queue": "reports"},
    "reports.report_schedule_send": {"queue": "reports"},
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
    "audit-retention-purge": {
        "task": "audit.retention_purge",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3600},
    },
    # Reads never return an expired stored response; this reclaims the rows.
    "responses-retention-purge": {
        "task": "responses.stored_response_purge",
        "schedule": crontab(minute=23),
        "options": {"expires": 3000},
    },
    "reports-usage-rollup": {
        "task": "reports.usage_rollup",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 290},
    },
    # Processes read the change log every poll; a day covers any lag short of a full
    # rebuild (a process behind the pruned part rebuilds in full).
    "configlog-prune": {
        "task": "configlog.prune",
        "schedule": crontab(hour=4, minute=41),
        "options": {"expires": 3600},
    },
    # Hourly through the 1st: a tick lost to a beat restart is made up by the next, and
    # delivery is idempotent per schedule and month, so extra ticks send nothing.
    "reports-monthly-delivery": {
        "task": "reports.report_schedules_enqueue_due",
        "schedule": crontab(minute=30, day_of_month="1"),
        "options": {"expires": 3500},
    },
}
