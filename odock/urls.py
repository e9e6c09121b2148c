from django.contrib import admin
from django.urls import include, path

from apps.api.api import api

admin.site.site_header = "Odock administration"
admin.site.site_title = "Odock"
admin.site.index_title = "Governance"
# The admin index links the dashboard (apps/dashboard: charts and the live feed).
admin.site.index_template = "dashboard/admin_index.html"

urlpatterns = [
    path("admin/dashboard/", include("apps.dashboard.urls")),
    path("admin/onboarding/", include("apps.onboarding.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("portal/", include("apps.portal.urls")),
    path("scim/v2/", include("apps.scim.urls", namespace="scim")),
    path("sso/", include("apps.sso.urls")),
]
