from django.urls import path

from apps.portal import views

app_name = "portal"

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("sso/", views.sso_start, name="sso"),
    path("logout/", views.logout, name="logout"),
    path("keys/new/", views.key_new, name="key_new"),
    path("keys/<int:key_id>/", views.key_detail, name="key"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("keys/<int:key_id>/rotate/", views.key_rotate, name="key_rotate"),
]
