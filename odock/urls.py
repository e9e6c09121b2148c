from django.contrib import admin
from django.urls import path

from apps.api.api import api

admin.site.site_header = "Odock administration"
admin.site.site_title = "Odock"
admin.site.index_title = "Governance"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
