"""The Azure OpenAI adapter: OpenAI's wire format at Azure's URLs, with Azure's credential.

Azure OpenAI speaks OpenAI's chat-completions and embeddings format, so this adapter is
:class:`~apps.gateway.providers.openai.adapter.OpenAIAdapter` (subclassed: the forwarding,
the stream loop, usage accounting and the error mapping are its) with two things changed:
where the request goes and how a content-filter refusal is reported.

Where (the provider's ``api_base`` is the resource endpoint, ``https://NAME.openai.azure.com``;
a trailing ``/openai`` or ``/openai/v1`` is tolerated), chosen by the provider option
``api_version``:
  * a dated version (default ``DEFAULT_API_VERSION`` = ``2024-10-21``, the current GA data
    plane version): ``POST {api_base}/openai/deployments/{deployment}/chat/completions
    ?api-version={api_version}`` (and ``/embeddings``), where ``{deployment}`` is the
    Deployment's ``upstream_model``; the ``model`` in the body is ignored by Azure there;
  * ``v1``: the newer v1 surface, ``POST {api_base}/openai/v1/chat/completions`` (and
    ``/embeddings``), no ``api-version``, ``model`` in the body = ``upstream_model``.
The credential goes as ``api-key: <key>`` (Azure's key header), never ``Authorization``.

Translated:
  * a 400 whose ``error.code`` is ``content_filter`` (the prompt tripped Azure's content
    management policy) → 400 with code ``content_filter`` and Azure's message, so the
    router and the client can tell a content-policy refusal from a malformed request;
    every other upstream error is mapped as for OpenAI (4xx that describe the request →
    ``upstream_rejected``, 401/403 → 502 ``upstream_auth_failed``, 429 → 429, 5xx → 502).

Passed through (Azure's documented extensions of OpenAI's format):
  * ``prompt_filter_results`` / ``content_filter_results`` in answers. Azure's leading
    stream event (empty ``choices``, ``object``/``id``/``model`` empty strings) is not a
    ``chat.completion.chunk``: its ``prompt_filter_results`` go on the first real chunk
    instead (``translate.AzureStreamTranslator``); usage is read from the usage chunk;
  * ``finish_reason: "content_filter"`` (the completion was cut by the output filter).

The Responses API (``/v1/responses`` sent natively): always ``POST {api_base}/openai/v1/
responses`` with ``model`` = ``upstream_model``, whatever ``api_version`` says — the
dated data-plane versions this adapter defaults to have no Responses API, the v1 surface
has it on every resource, and the native choice is made per kind, not per deployment.

Not supported:
  * Microsoft Entra ID (AAD) bearer tokens: only API keys are stored for a provider;
  * dated ``api_version`` values older than ``2024-09-01-preview`` reject
    ``stream_options``, which the gateway always sends on streams to count usage: use the
    default or a newer version (or ``v1``);
  * the Assistants, images and audio APIs: the gateway does not proxy them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from yarl import URL

from apps.gateway.context import RequestContext
from apps.gateway.providers.azure.spec import DEFAULT_API_VERSION, V1, AzureOptions
from apps.gateway.providers.azure.translate import AzureStreamTranslator
from apps.gateway.providers.base import cached_target
from apps.gateway.providers.openai.adapter import OpenAIAdapter
from apps.gateway.providers.options import deployment_options
from apps.gateway.snapshot import DeploymentEntry


def api_version_of(dep: DeploymentEntry) -> str:
    """The provider option ``api_version``, or the default GA version."""
    return deployment_options(dep, AzureOptions).api_version.strip() or DEFAULT_API_VERSION


def _resource_base(api_base: str) -> str:
    base = api_base.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def azure_url(api_base: str, deployment: str, path: str, api_version: str) -> URL:
    """The upstream URL of ``path`` (``/chat/completions`` or ``/embeddings``)."""
    base = URL(_resource_base(api_base))
    if api_version == V1:
        return base / "openai" / "v1" / path.lstrip("/")
    # The deployment name is one path segment, whatever it contains.
    segment = quote(deployment, safe="")
    url = (base / "openai" / "deployments").joinpath(segment, encoded=True) / path.lstrip("/")
    return url.with_query({"api-version": api_version})


def azure_headers(api_key: str) -> dict[str, str]:
    """Static headers of every call: Azure's key header, not ``Authorization``."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["api-key"] = api_key
    return headers


class AzureOpenAIAdapter(OpenAIAdapter):
    """OpenAI's adapter, pointed at Azure OpenAI deployments (see the module docstring)."""

    options_type = AzureOptions

    def _target(self, dep: DeploymentEntry, path: str) -> tuple[URL, dict[str, str]]:
        """The URL and headers of a deployment's endpoint."""
        return cached_target(
            self._targets,
            (dep.api_base, path, dep.api_key, dep.upstream_model, dep.options),
            lambda: (
                azure_url(dep.api_base, dep.upstream_model, path, api_version_of(dep)),
                azure_headers(dep.api_key),
            ),
        )

    def native_target(self, dep: DeploymentEntry) -> tuple[URL, dict[str, str]]:
        """Azure's Responses API, on the v1 surface (see the module docstring)."""
        return cached_target(
            self._targets,
            (dep.api_base, "native:/responses", dep.api_key),
            lambda: (
                azure_url(dep.api_base, dep.upstream_model, "/responses", V1),
                azure_headers(dep.api_key),
            ),
        )

    def stream(self, ctx: RequestContext, headers: Mapping[str, Any]) -> AzureStreamTranslator:
        return AzureStreamTranslator(include_usage=ctx.include_usage, public_model=ctx.model_name)
