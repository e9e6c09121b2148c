"""The dashboard page and its JSON: thin — check the viewer's spend area, parse the
query, call a selector with the area, answer."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.dashboard import selectors
from apps.dashboard.live import PING_SECONDS
from apps.dashboard.permissions import spend_area
from apps.dashboard.websocket import LIVE_PATH
from apps.identity.scope import Area

FEED_ROWS = 25
# The charts reload this often while the page is in view: with the roll-ups every 30 s
# (the embedded scheduler), new traffic shows within a minute without a reload.
REFRESH_SECONDS = 15


def _spend_json(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 in JSON for anyone without a spend area (a script gets no login page to
    parse); the view gets the area."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        area = spend_area(request.user)
        if area.empty:
            return JsonResponse({"error": "no spend role: the dashboard shows nothing"}, status=403)
        return view(request, *args, area=area, **kwargs)

    return wrapped


def _organization_id(request: HttpRequest, area: Area) -> int | None:
    """The picked organisation; one the area does not touch is a 403, whether it exists
    or not (ids leak nothing)."""
    raw = request.GET.get("org", "").strip()
    if not raw:
        return None
    try:
        organization_id = int(raw)
    except ValueError:
        raise ValidationError({"org": "an organisation id"}) from None
    if not area.everything and not area.organizations().filter(pk=organization_id).exists():
        raise PermissionDenied("this organisation is outside what you may see")
    return organization_id


def _scope(request: HttpRequest, area: Area) -> selectors.DashboardScope:
    return selectors.dashboard_scope(
        range_name=request.GET.get("range", "24h"),
        organization_id=_organization_id(request, area),
        area=area,
    )


def _budgets(request: HttpRequest, area: Area) -> dict[str, Any]:
    return selectors.budget_burn(_organization_id(request, area), area=area)


def _recent(request: HttpRequest, area: Area) -> dict[str, Any]:
    org = _organization_id(request, area)
    return {"records": selectors.recent_records(org, FEED_ROWS, area=area)}


CHARTS: dict[str, Callable[[HttpRequest, Area], Any]] = {
    "overview": lambda r, a: selectors.overview(_scope(r, a)),
    "spend-team": lambda r, a: selectors.spend_series(_scope(r, a), "team"),
    "spend-model": lambda r, a: selectors.spend_series(_scope(r, a), "model"),
    "top-keys": lambda r, a: {"keys": selectors.top_keys(_scope(r, a))},
    "rates": lambda r, a: selectors.rates(_scope(r, a)),
    "latency": lambda r, a: selectors.latency(_scope(r, a)),
    "budgets": _budgets,
    "findings": lambda r, a: selectors.findings_by_type(_scope(r, a)),
    "recent": _recent,
}


@require_GET
@never_cache
@_spend_json
def chart_data(request: HttpRequest, chart: str, *, area: Area) -> HttpResponse:
    build = CHARTS.get(chart)
    if build is None:
        return JsonResponse({"error": f"unknown chart {chart!r}"}, status=404)
    try:
        return JsonResponse(build(request, area))
    except ValidationError as exc:
        return JsonResponse({"error": exc.message_dict}, status=400)
    except PermissionDenied as exc:
        return JsonResponse({"error": str(exc)}, status=403)


@never_cache
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """Signed-out visitors go to the admin's login; a person without a spend role gets a
    403 (the admin's own gate, staff only, is not the rule here: a finance person may
    watch spend without any admin permission)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    area = spend_area(request.user)
    if area.empty:
        raise PermissionDenied("no spend role: the dashboard shows nothing")
    return _dashboard_page(request, area)


def _dashboard_page(request: HttpRequest, area: Area) -> HttpResponse:
    config = {
        "dataUrl": reverse("dashboard:data", args=["CHART"]),
        "livePath": "/" + LIVE_PATH,
        "pingSeconds": PING_SECONDS,
        "feedRows": FEED_ROWS,
        "refreshSeconds": REFRESH_SECONDS,
        "ranges": list(selectors.RANGES),
    }
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "is_nav_sidebar_enabled": False,  # the charts want the whole width
        "organizations": selectors.organization_choices(area),
        "whole_platform": area.everything,
        "ranges": list(selectors.RANGES),
        "config": config,
    }
    return TemplateResponse(request, "dashboard/dashboard.html", context)
