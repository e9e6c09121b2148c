"""The portal's pages: thin views over ``selectors`` and ``services``.

Every page but the sign-in is for a signed-in person and shows only their own things;
a key id that is not theirs answers 404. A new or rotated secret is rendered in the
POST's own response, never stored or shown again (no redirect carries it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import quote

from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.identity.scope import scope_for
from apps.policies.selectors import effective_policy_for_key
from apps.portal import selectors
from apps.portal.forms import KeyCreateForm, SsoForm
from apps.portal.services import portal_key_create, portal_key_revoke, portal_key_rotate

View = Callable[..., HttpResponse]


def person_required(view: View) -> View:
    """Signed in (any active account); what they see is still only their own."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("portal:login"))
        return view(request, *args, **kwargs)

    return never_cache(wrapped)


class LoginView(auth_views.LoginView):
    """Local password sign-in, and a form that sends the person to their
    organisation's single sign-on."""

    template_name = "portal/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "sso_form": SsoForm()}

    def get_default_redirect_url(self) -> str:
        return reverse("portal:index")


@require_GET
def sso_start(request: HttpRequest) -> HttpResponse:
    """``/sso/<org>/login/?next=/portal/`` for the organisation the person typed."""
    form = SsoForm(request.GET)
    if not form.is_valid():
        return render(
            request,
            "portal/login.html",
            {"form": LoginView.form_class(request), "sso_form": form},
            status=400,
        )
    org = quote(form.cleaned_data["organization"], safe="")
    return redirect(f"/sso/{org}/login/?next={quote(reverse('portal:index'), safe='')}")


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import logout as auth_logout

    auth_logout(request)
    return redirect("portal:login")


def _named(records: list, names: dict[int, str]) -> list:
    for record in records:
        record.key_name = names.get(record.key_id, record.key_prefix)
    return records


@person_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    user = request.user
    keys = list(selectors.owned_keys(user)[: selectors.MAX_KEYS])
    ids = [k.pk for k in keys]
    spend = selectors.spend_by_key(ids)
    budgets = selectors.budgets_by_key(keys, user)
    rows = [{"key": k, "spend": spend.get(k.pk, 0), "budgets": budgets.get(k.pk, [])} for k in keys]
    start, end = selectors.month_bounds()
    context = {
        "rows": rows,
        "total_spend": sum(spend.values()),
        "period_start": start,
        "period_end": end,
        "recent": _named(selectors.recent_requests(ids), {k.pk: k.name for k in keys}),
        "can_create": selectors.member_projects(user).exists(),
        "memberships": scope_for(user).memberships,
    }
    return render(request, "portal/index.html", context)


@person_required
@require_http_methods(["GET", "POST"])
def key_new(request: HttpRequest) -> HttpResponse:
    form = KeyCreateForm(request.POST or None, user=request.user)
    if not form.projects:
        return render(request, "portal/no_projects.html", status=403)
    if request.method == "POST" and form.is_valid():
        try:
            issued = portal_key_create(owner=request.user, request=form.key_request())
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                for message in messages:
                    form.add_error(field if field in form.fields else None, message)
        else:
            return render(
                request,
                "portal/secret.html",
                {"key": issued.key, "secret": issued.secret, "action": "created"},
                status=201,
            )
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/key_new.html", {"form": form}, status=status)


@person_required
@require_GET
def key_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    key = selectors.owned_key_get(request.user, key_id)
    context = {
        "key": key,
        "policy": effective_policy_for_key(key),
        "budgets": selectors.budgets_by_key([key], request.user).get(key.pk, []),
        "spend": selectors.spend_by_key([key.pk]).get(key.pk, 0),
        "recent": _named(selectors.recent_requests([key.pk]), {key.pk: key.name}),
    }
    return render(request, "portal/key_detail.html", context)


@person_required
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = selectors.owned_key_get(request.user, key_id)
    portal_key_revoke(key=key)
    return redirect("portal:key", key_id=key.pk)


@person_required
@require_POST
def key_rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    key = selectors.owned_key_get(request.user, key_id)
    try:
        issued = portal_key_rotate(key=key)
    except ValidationError as exc:
        return render(request, "portal/error.html", {"message": " ".join(exc.messages)}, status=409)
    return render(
        request,
        "portal/secret.html",
        {"key": issued.key, "secret": issued.secret, "action": "rotated"},
    )
