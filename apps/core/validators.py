"""Validators shared by several apps."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError


def validate_upstream_url(value: str) -> None:
    """An http(s) URL with a host. Unlike Django's URLValidator it accepts single-label
    hosts (``http://vllm:8000/v1``), which self-hosted and in-cluster upstreams use."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValidationError("Enter a valid http(s) URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter a valid http(s) URL, e.g. https://api.openai.com/v1.")
    if any(c.isspace() for c in value):
        raise ValidationError("A URL cannot contain spaces.")
