from django.urls import path

from apps.sso import views

app_name = "sso"

urlpatterns = [
    path("", views.start, name="start"),
    path("callback/", views.callback, name="callback"),
    path("<slug:org>/login/", views.LoginView.as_view(), name="login"),
]
