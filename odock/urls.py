from django.contrib import admin
from django.urls import include, path

from apps.api.api import api
from odock.admin_site import odock_site_install, sections_page

# The admin's landing page is the dashboard, its navigation follows the hierarchy and
# "View site" opens the dashboard (odock/admin_site.py).
odock_site_install(admin.site)

urlpatterns = [
    path("admin/dashboard/", include("apps.dashboard.urls")),
    path("admin/onboarding/", include("apps.onboarding.urls")),
    path(
        "admin/sections/",
        admin.site.admin_view(lambda request: sections_page(admin.site, request)),
        name="admin-sections",
    ),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("portal/", include("apps.portal.urls")),
    path("scim/v2/", include("apps.scim.urls", namespace="scim")),
    path("sso/", include("apps.sso.urls")),
]
