"""Stage 2, authorize: parse and validate the request, resolve a model alias, then check the
model against the key's effective policy."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import orjson

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError, bad_request, forbidden, model_not_found
from apps.gateway.request_schema import CHAT_COMPLETIONS, EMBEDDINGS

END_USER_HEADER = b"x-odock-end-user"
# The same bound as ``apps.policies.models.END_USER_PATTERN`` (the gateway imports no
# Django models): 1-128 characters, letters and digits first.
_END_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=:/-]{0,127}")
_END_USER_RULE = (
    "1 to 128 characters: letters, digits and . _ @ + = : / -, starting with a letter or digit"
)


def end_user_of(ctx: RequestContext) -> str:
    """The end customer the application names: the ``x-odock-end-user`` header, else the
    body's ``user`` (OpenAI chat, Responses and embeddings; Anthropic's
    ``metadata.user_id`` arrives translated to it). "" when neither is sent.

    The id keys counters and reports, so it is bounded. The header is the gateway's own: out
    of bounds, a 400 naming it. The body's field belongs to the provider's API, which
    accepts more (Claude Code sends a ``metadata.user_id`` of ~170 characters): it is
    forwarded as sent and never refused; out of bounds, the end user is its digest,
    ``sha256:`` + 32 hex characters (stable, so limits and reports still work)."""
    for name, raw in ctx.scope["headers"]:
        if name == END_USER_HEADER:
            value = raw.decode("latin-1")
            if _END_USER.fullmatch(value) is None:
                raise bad_request(
                    f"The x-odock-end-user header must be {_END_USER_RULE}.",
                    code="invalid_end_user",
                    param="x-odock-end-user",
                )
            return value
    value = ctx.body.get("user") if ctx.body is not None else None
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        value = orjson.dumps(value).decode()
    if _END_USER.fullmatch(value) is None:
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return value


def parse_json_body(ctx: RequestContext) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        body = orjson.loads(ctx.raw_body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def validate_chat(ctx: RequestContext) -> None:
    body = parse_json_body(ctx)
    CHAT_COMPLETIONS.check(body)
    ctx.model_name = body["model"]
    ctx.stream = bool(body.get("stream"))
    options = body.get("stream_options")
    ctx.include_usage = bool(options and options.get("include_usage"))
    ctx.body = body


def validate_embeddings(ctx: RequestContext) -> None:
    body = parse_json_body(ctx)
    EMBEDDINGS.check(body)
    ctx.model_name = body["model"]
    ctx.body = body


class Authorize:
    """Parse the request and check the model against the key's effective policy."""

    name = StageName.AUTHORIZE

    def __init__(self, validate: Callable[[RequestContext], None]) -> None:
        self._validate = validate

    async def run(self, ctx: RequestContext) -> None:
        try:
            self._validate(ctx)
            ctx.end_user = end_user_of(ctx)
        except GatewayError as exc:
            ctx.decide(self.name, Outcome.DENY, f"invalid request: {exc.code}")
            raise
        assert ctx.key is not None
        # ``ctx.model_name`` stays the name the client sent (answers and the record's
        # ``model_requested`` carry it); an alias only decides which model serves it.
        name, via = resolve_alias(ctx), ""
        if name != ctx.model_name:
            via = f" (alias {ctx.model_name} → {name})"
        allowed = ctx.key.allowed_models
        if allowed is not None and name not in allowed:
            ctx.decide(self.name, Outcome.DENY, f"model {name} not allowed{via}")
            raise forbidden(
                f"This key may not use the model '{ctx.model_name}'.", code="model_not_allowed"
            )
        model = ctx.snapshot.models.get(name)
        if model is None:
            ctx.decide(self.name, Outcome.DENY, f"unknown model {name}{via}")
            raise model_not_found(ctx.model_name)
        ctx.model = model
        ctx.decide(self.name, Outcome.ALLOW, f"model {model.name}{via}")


def resolve_alias(ctx: RequestContext) -> str:
    """The served model's name for the name the client sent. A served model's own name
    always means that model (an alias never shadows it), so the alias table is read only
    for names the snapshot does not serve."""
    assert ctx.key is not None
    aliases = ctx.key.aliases
    if aliases is None or ctx.model_name in ctx.snapshot.models:
        return ctx.model_name
    return aliases.target(ctx.model_name) or ctx.model_name
