"""The guided flows' pages: thin — who may (``permissions``), the form, the service,
the answer. Rendered inside the admin's frame (its header, breadcrumbs and styles)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django import forms
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from apps.keys.admin import SHOW_ONCE_TEMPLATE
from apps.keys.models import VirtualKey
from apps.onboarding.forms import NewProviderForm, NewTeamForm
from apps.onboarding.permissions import may_onboard_providers, team_creation_organizations
from apps.onboarding.probe import deployment_probe, probe_timeout
from apps.onboarding.services import provider_onboard, team_onboard
from apps.providers.models import Deployment

View = Callable[..., HttpResponse]
T = TypeVar("T")


def _signed_in(view: View) -> View:
    """Signed-out visitors go to the admin's login, then back here."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        return view(request, *args, **kwargs)

    return wrapped


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {**admin.site.each_context(request), "title": title, **context},
    )


def _submitted(request: HttpRequest, form: forms.Form, service: Callable[..., T]) -> T | None:
    """What ``service`` returned for a valid POST, called with the form's cleaned data
    (each flow's form names its fields after its service's keyword arguments); None to
    show the form, again with the service's refusals on their fields."""
    if request.method != "POST" or not form.is_valid():
        return None
    try:
        return service(**form.cleaned_data)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return None


@require_http_methods(["GET", "POST"])
@never_cache
@_signed_in
def new_team(request: HttpRequest) -> HttpResponse:
    """Team + monthly budget (+ rpm) + first project + first key; the key's secret is on
    the page answering the POST, and nowhere else, ever."""
    organizations = team_creation_organizations(request.user)
    if not organizations.exists():
        raise PermissionDenied("Creating a team needs an organisation admin role.")
    form = NewTeamForm(request.POST or None, organizations=organizations)
    done = _submitted(request, form, team_onboard)
    if done is None:
        return _page(request, "onboarding/new_team.html", "New team", form=form)
    response = _page(
        request,
        "onboarding/team_created.html",
        "Team created",
        done=done,
        key=done.issued.key,
        secret=done.issued.secret,
        rotated=False,
        opts=VirtualKey._meta,
        key_url=reverse("admin:keys_virtualkey_change", args=[done.issued.key.pk]),
        team_url=reverse("admin:tenancy_team_change", args=[done.team.pk]),
        show_once_template=SHOW_ONCE_TEMPLATE,
    )
    add_never_cache_headers(response)  # no-store: the secret is in this page
    return response


def _platform_only(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not may_onboard_providers(request.user):
            raise PermissionDenied("Providers and models are changed by platform admins only.")
        return view(request, *args, **kwargs)

    return wrapped


@require_http_methods(["GET", "POST"])
@never_cache
@_signed_in
@_platform_only
def new_provider(request: HttpRequest) -> HttpResponse:
    """Provider + API key + public model + deployment, then on to the test page."""
    form = NewProviderForm(request.POST or None)
    done = _submitted(request, form, provider_onboard)
    if done is None:
        return _page(request, "onboarding/new_provider.html", "New provider and model", form=form)
    url = reverse("onboarding:deployment-test", args=[done.deployment.pk])
    return redirect(f"{url}?created=1")


@require_http_methods(["GET", "POST"])
@never_cache
@_signed_in
@_platform_only
def deployment_test(request: HttpRequest, pk: int) -> HttpResponse:
    """The deployment's summary and its "Test this deployment" button; a POST sends one
    request (bounded in time) and shows the answer or the error."""
    deployment = get_object_or_404(Deployment.objects.select_related("model", "provider"), pk=pk)
    result = deployment_probe(deployment) if request.method == "POST" else None
    return _page(
        request,
        "onboarding/deployment_test.html",
        f"Deployment {deployment}",
        deployment=deployment,
        result=result,
        timeout=probe_timeout(),
        created=request.GET.get("created") == "1",
        model_url=reverse("admin:providers_model_change", args=[deployment.model_id]),
        provider_url=reverse("admin:providers_provider_change", args=[deployment.provider_id]),
    )
