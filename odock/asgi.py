"""One ASGI application: the proxy (/v1, health, metrics) and Django (admin, API).

Django is set up before Channels and the gateway are imported (they read settings).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "odock.settings")
django_asgi_app = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from apps.core.scheduler import with_scheduler  # noqa: E402
from odock.asgi_router import build_application  # noqa: E402
from odock.gateway import build_gateway  # noqa: E402

gateway = build_gateway()
# Static files (admin CSS/JS) are served by the same process, so one ASGI server runs
# everything; put a CDN or reverse proxy in front for heavy admin use. The periodic jobs
# run in this process when no Celery beat does (ODOCK_SCHEDULER, apps/core/scheduler.py).
application = with_scheduler(build_application(gateway, ASGIStaticFilesHandler(django_asgi_app)))
