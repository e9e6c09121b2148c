"""The dashboard page and its JSON: thin — parse the query, call a selector, answer."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.dashboard import selectors
from apps.dashboard.live import PING_SECONDS
from apps.dashboard.permissions import may_watch
from apps.dashboard.websocket import LIVE_PATH

FEED_ROWS = 25


def _staff_json(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 in JSON for anyone but active staff (a script gets no login page to parse)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not may_watch(request.user):
            return JsonResponse({"error": "staff only"}, status=403)
        return view(request, *args, **kwargs)

    return wrapped


def _organization_id(request: HttpRequest) -> int | None:
    raw = request.GET.get("org", "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({"org": "an organisation id"}) from None


def _scope(request: HttpRequest) -> selectors.DashboardScope:
    return selectors.dashboard_scope(
        range_name=request.GET.get("range", "24h"), organization_id=_organization_id(request)
    )


CHARTS: dict[str, Callable[[HttpRequest], Any]] = {
    "overview": lambda r: selectors.overview(_scope(r)),
    "spend-team": lambda r: selectors.spend_series(_scope(r), "team"),
    "spend-model": lambda r: selectors.spend_series(_scope(r), "model"),
    "top-keys": lambda r: {"keys": selectors.top_keys(_scope(r))},
    "rates": lambda r: selectors.rates(_scope(r)),
    "latency": lambda r: selectors.latency(_scope(r)),
    "budgets": lambda r: selectors.budget_burn(_organization_id(r)),
    "findings": lambda r: selectors.findings_by_type(_scope(r)),
    "recent": lambda r: {"records": selectors.recent_records(_organization_id(r), FEED_ROWS)},
}


@require_GET
@never_cache
@_staff_json
def chart_data(request: HttpRequest, chart: str) -> HttpResponse:
    build = CHARTS.get(chart)
    if build is None:
        return JsonResponse({"error": f"unknown chart {chart!r}"}, status=404)
    try:
        return JsonResponse(build(request))
    except ValidationError as exc:
        return JsonResponse({"error": exc.message_dict}, status=400)


def _dashboard_page(request: HttpRequest) -> HttpResponse:
    config = {
        "dataUrl": reverse("dashboard:data", args=["CHART"]),
        "livePath": "/" + LIVE_PATH,
        "pingSeconds": PING_SECONDS,
        "feedRows": FEED_ROWS,
        "ranges": list(selectors.RANGES),
    }
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "is_nav_sidebar_enabled": False,  # the charts want the whole width
        "organizations": selectors.organization_choices(),
        "ranges": list(selectors.RANGES),
        "config": config,
    }
    return TemplateResponse(request, "dashboard/dashboard.html", context)


# The admin's own gate: staff only, anyone else is sent to the admin login.
dashboard_page = admin.site.admin_view(_dashboard_page)
