"""Makes every admin and API request the context of the changes it makes (actor, request
id, client address), and answers with its request id so a change can be traced back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from apps.compliance.context import request_changes

Handler = Callable[[HttpRequest], HttpResponse] | Callable[[HttpRequest], Awaitable[HttpResponse]]


class ChangeContextMiddleware:
    """Goes after AuthenticationMiddleware (``request.user``); the actor is read when a
    change is recorded, so the management API's token (``request.auth``) is seen too."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        with request_changes(request) as context:
            response = self.get_response(request)
        response.headers.setdefault("X-Request-ID", context.request_id)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        with request_changes(request) as context:
            response = await self.get_response(request)
        response.headers.setdefault("X-Request-ID", context.request_id)
        return response
