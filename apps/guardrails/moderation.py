"""The example guardrail plugin: an external moderation endpoint, with a timeout.

Speaks OpenAI's ``POST /v1/moderations`` format (``{"input": [...]}`` →
``{"results": [{"flagged", "categories"}]}``), which several self-hosted moderation services
also serve. Findings are ``<plugin name>.<category>`` for every flagged category.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from apps.guardrails.plugins import PluginRequest, PluginResult


class HttpModeration:
    name = "moderation"

    def __init__(
        self,
        *,
        url: str,
        api_key: str = "",
        model: str = "omni-moderation-latest",
        timeout_seconds: float = 2.0,
        fail_open: bool = True,
    ) -> None:
        self.url = url
        self.model = model
        self.fail_open = fail_open
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def check(self, texts: Sequence[str], request: PluginRequest) -> PluginResult:
        if not texts:
            return PluginResult()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                self.url,
                json={"input": list(texts), "model": self.model},
                headers={**self._headers, "X-Request-ID": request.request_id},
            ) as response:
                if response.status != 200:
                    return PluginResult(failed=True, fail_open=self.fail_open)
                payload = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return PluginResult(failed=True, fail_open=self.fail_open)
        findings = sorted(
            {
                f"{self.name}.{category}"
                for result in payload.get("results") or ()
                if result.get("flagged")
                for category, hit in (result.get("categories") or {}).items()
                if hit
            }
        )
        return PluginResult(findings=findings)
