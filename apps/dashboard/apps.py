from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "apps.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        # The gateway's record stage calls this for every record; it is a no-op until a
        # dashboard connects (see apps.dashboard.live). Registered here so the gateway
        # imports nothing of the dashboard.
        from apps.dashboard.live import live_feed
        from apps.gateway.stages.record import RECORD_OBSERVERS

        if live_feed.publish not in RECORD_OBSERVERS:
            RECORD_OBSERVERS.append(live_feed.publish)
