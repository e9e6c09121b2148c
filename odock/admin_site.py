"""The admin site's shape: the dashboard as its landing page, navigation in the order of the
hierarchy (organisations → teams → projects → keys, then policies, providers, audit,
reports, compliance, people) instead of Django's alphabetical app list, and "View site"
pointing at the dashboard instead of a bare 404.

Installed on the default ``admin.site`` (like ``apps.identity.admin_scope``'s
``scoped_site_install``), so every ``@admin.register`` and every test keeps using it.
Who sees what is unchanged: every section is built from ``AdminSite.get_app_list``,
which lists only the models each ModelAdmin lets this person see.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse, reverse_lazy

from apps.dashboard.permissions import may_watch
from apps.dashboard.views import dashboard_page

# (section name, [app_label.model_name, ...]) in navigation order; a model not named here
# goes to "More" at the end, so a new app is never hidden.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Hierarchy",
        ("tenancy.organization", "tenancy.team", "tenancy.project", "keys.virtualkey"),
    ),
    (
        "Policies",
        (
            "policies.budget",
            "policies.ratelimit",
            "policies.modelaccess",
            "policies.modelalias",
            "policies.deploymenttagrule",
            "guardrails.guardrailrule",
            "audit.contentcapture",
            "policies.enduserpolicy",
            "portal.keylifetimerule",
            "mcp_gateway.toolgrant",
            "policies.budgetalert",
        ),
    ),
    ("Providers", ("providers.provider", "providers.model", "providers.deployment")),
    ("MCP", ("mcp_gateway.mcpserver",)),
    ("Audit", ("audit.requestlog", "audit.auditcheckpoint", "audit.auditpurge")),
    ("Reports", ("reports.spendreport", "reports.reportschedule", "reports.usagerollup")),
    ("Compliance", ("compliance.configchange", "compliance.evidencepack")),
    (
        "People",
        (
            "identity.membership",
            "auth.user",
            "auth.group",
            "sso.oidcprovider",
            "sso.signinevent",
            "scim.scimsettings",
            "scim.scimtoken",
            "scim.scimgroup",
            "scim.scimidentity",
            "api.admintoken",
        ),
    ),
)
MORE = "More"
# Guided flows (the onboarding app, when installed): linked only if their URLs resolve.
GUIDED_FLOWS = (("onboarding:new-team", "New team"), ("onboarding:new-provider", "New provider"))


def sections_from(apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Django's app list (already limited to what this person may see) regrouped into
    :data:`SECTIONS`; empty sections are dropped. Each section keeps the keys the admin's
    templates read (``name``, ``app_label``, ``app_url``, ``models``)."""
    by_key: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for app in apps:
        for model in app["models"]:
            by_key[f"{app['app_label']}.{model['object_name'].lower()}"] = (app, model)
    sections = []
    for name, keys in SECTIONS:
        found = [by_key.pop(key) for key in keys if key in by_key]
        if found:
            sections.append(_section(name, found))
    if by_key:
        sections.append(_section(MORE, list(by_key.values())))
    return sections


def _section(name: str, found: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    first_app = found[0][0]
    return {
        "name": name,
        "app_label": first_app["app_label"],
        "app_url": first_app["app_url"],
        "has_module_perms": True,
        "models": [model for _app, model in found],
    }


def guided_flows() -> list[tuple[str, str]]:
    """(url, label) of the guided creation flows whose URLs exist in this deployment."""
    links = []
    for name, label in GUIDED_FLOWS:
        try:
            links.append((reverse(name), label))
        except NoReverseMatch:
            continue
    return links


def _get_app_list(
    site: AdminSite, request: HttpRequest, app_label: str | None = None
) -> list[dict[str, Any]]:
    apps = AdminSite.get_app_list(site, request, app_label)
    # One app's own page (admin/<app_label>/) keeps that app; everything else is sectioned.
    return apps if app_label else sections_from(apps)


def _each_context(site: AdminSite, request: HttpRequest) -> dict[str, Any]:
    context = AdminSite.each_context(site, request)
    context["odock_guided_flows"] = guided_flows()
    return context


def _index(
    site: AdminSite, request: HttpRequest, extra_context: dict[str, Any] | None = None
) -> HttpResponse:
    """The dashboard for whoever may watch spend (platform, org and team admins, finance);
    the list of sections for the others (auditors)."""
    if may_watch(request.user):
        return dashboard_page(request)
    return sections_page(site, request)


def sections_page(site: AdminSite, request: HttpRequest) -> HttpResponse:
    """Every section this person may open, in hierarchy order (Django's index page)."""
    context = {
        **site.each_context(request),
        "title": site.index_title,
        "subtitle": None,
        "app_list": site.get_app_list(request),
    }
    request.current_app = site.name
    return TemplateResponse(request, site.index_template or "admin/index.html", context)


def odock_site_install(site: AdminSite) -> None:
    """Give ``site`` the landing page, navigation and "View site" described above."""
    site.site_header = "Odock administration"
    site.site_title = "Odock"
    site.index_title = "All sections"
    site.site_url = reverse_lazy("dashboard:index")
    # The top navigation bar (templates/admin/base_site.html) replaces the side bar, whose
    # 360 px the list pages need to fit a 1366 px screen.
    site.enable_nav_sidebar = False
    site.get_app_list = MethodType(_get_app_list, site)  # type: ignore[method-assign]
    site.each_context = MethodType(_each_context, site)  # type: ignore[method-assign]
    site.index = MethodType(_index, site)  # type: ignore[method-assign]
