"""Which upstream server, and which upstream name, an agent's name or URI means for a key.

Names: a namespaced server's tools and prompts are ``<server>__<name>``; an un-namespaced
server's keep their upstream names. A name two servers of one key would share is refused
as ambiguous (a call must never land on the wrong server). Tools need a grant on the tool;
resources, templates, prompts and completions need the whole server granted. Refusals
never reach the upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.snapshot import Identity
from apps.mcp.call import CallTrace
from apps.mcp.errors import (
    INVALID_PARAMS,
    NOT_ALLOWED,
    RESOURCE_NOT_FOUND,
    UNAVAILABLE,
    McpFailure,
    invalid_params,
)
from apps.mcp.policy import SEPARATOR, GrantDecision, McpPolicy, ServerSpec, decide
from apps.mcp.upstream import McpSessionPool, UpstreamServer, UpstreamUnavailable

_TEMPLATES: dict[str, UriTemplate | None] = {}


def template_matches(template: str, uri: str) -> bool:
    """RFC 6570 matching with the SDK's parser, each template parsed once."""
    if template not in _TEMPLATES:
        if len(_TEMPLATES) > 5000:
            _TEMPLATES.clear()
        try:
            _TEMPLATES[template] = UriTemplate.parse(template)
        except InvalidUriTemplate:
            _TEMPLATES[template] = None
    parsed = _TEMPLATES[template]
    return parsed is not None and parsed.match(uri) is not None


def named_servers(policy: McpPolicy, identity: Identity) -> set[str]:
    """Servers some level of the key grants anything on (others are never contacted)."""
    levels = [
        ("org", identity.org_id),
        ("team", identity.team_id),
        ("project", identity.project_id),
        ("key", identity.key_id),
    ]
    return {g.server for lv in levels for g in policy.grants.get(lv, ()) if g.allow}


class Resolver:
    """Names and URIs to (granted, reachable) upstreams, for one gateway process."""

    def __init__(
        self, pool: McpSessionPool, current_policy: Callable[[], Awaitable[McpPolicy]]
    ) -> None:
        self.pool = pool
        self.current_policy = current_policy

    async def candidate_servers(self, ctx: RequestContext, policy: McpPolicy) -> list[ServerSpec]:
        assert ctx.key is not None
        named = named_servers(policy, ctx.key.identity)
        return [spec for name, spec in sorted(policy.servers.items()) if name in named]

    async def whole_servers(self, ctx: RequestContext) -> list[UpstreamServer]:
        """Ready upstreams the key may use as a whole (resources and prompts need that)."""
        assert ctx.key is not None
        policy = await self.current_policy()
        ready = await self.pool.ready(await self.candidate_servers(ctx, policy))
        return [u for u in ready if decide(policy, ctx.key.identity, u.spec.name, "*").allowed]

    async def resolve(
        self, ctx: RequestContext, policy: McpPolicy, name: Any, kind: str, trace: CallTrace
    ) -> tuple[ServerSpec, UpstreamServer, str, GrantDecision]:
        """The upstream and upstream name behind the name an agent used (``kind``: tool or
        prompt); refusals never reach the upstream."""
        if not isinstance(name, str) or not name:
            raise invalid_params(f"'name' must name a {kind}.")
        ctx.model_name = name[:200]
        matches: list[tuple[str, str]] = []
        server, sep, rest = name.partition(SEPARATOR)
        if sep and (spec := policy.servers.get(server)) is not None and spec.namespaced:
            matches.append((server, rest))
        plain = [s for s in await self.candidate_servers(ctx, policy) if not s.namespaced]
        for upstream in await self.pool.ready(plain) if plain else ():
            names = upstream.tools if kind == "tool" else {p["name"] for p in upstream.prompts}
            if name in names:
                matches.append((upstream.spec.name, name))
        if len(matches) > 1:
            ctx.decide(StageName.AUTHORIZE, Outcome.DENY, f"ambiguous {kind} name")
            raise McpFailure(
                INVALID_PARAMS,
                f"The {kind} name '{name}' is ambiguous: several servers of this key offer it.",
                status=409,
                code=f"{kind}_name_ambiguous",
            )
        # <server>__<name> naming no namespaced server: an unknown server is refused below
        # like an ungranted tool; an un-namespaced server's names have no prefixed alias.
        known = policy.servers.get(server) if sep else None
        prefixed = bool(sep) and (known is None or known.namespaced)
        if not matches and not prefixed:
            ctx.decide(StageName.AUTHORIZE, Outcome.DENY, f"no such {kind}")
            raise McpFailure(
                INVALID_PARAMS, f"Unknown {kind}: {name}", status=404, code=f"{kind}_not_found"
            )
        server, upstream_name = matches[0] if matches else (server, rest)
        target = upstream_name if kind == "tool" else "*"
        spec, upstream, grant = await self.upstream_for(
            ctx, policy, server, target, trace, shown=name, kind=kind
        )
        trace.tool = upstream_name
        return spec, upstream, upstream_name, grant

    async def upstream_for(
        self,
        ctx: RequestContext,
        policy: McpPolicy,
        server: str,
        target: str,
        trace: CallTrace,
        *,
        shown: str,
        kind: str,
    ) -> tuple[ServerSpec, UpstreamServer, GrantDecision]:
        """The server if the key may use ``target`` on it ("*": the whole server)."""
        assert ctx.key is not None
        trace.server, trace.tool = server, target
        spec = policy.servers.get(server)
        grant = decide(policy, ctx.key.identity, server, target)
        if spec is None or not grant.allowed:
            # An unknown server and an ungranted tool look the same to the agent.
            ctx.decide(
                StageName.AUTHORIZE, Outcome.DENY, grant.reason if spec else "unknown server"
            )
            raise McpFailure(
                NOT_ALLOWED,
                f"This key may not use the {kind} '{shown[:200]}'.",
                status=403,
                code="tool_not_allowed",
            )
        upstream = self.pool.get(spec)
        try:
            await upstream.ensure()
        except UpstreamUnavailable as exc:
            ctx.decide(StageName.ROUTE, Outcome.ERROR, "upstream unavailable")
            raise McpFailure(
                UNAVAILABLE, str(exc), status=502, code="upstream_unavailable"
            ) from None
        return spec, upstream, grant

    async def resource_owner(
        self, ctx: RequestContext, uri: Any, trace: CallTrace, *, template: bool = False
    ) -> UpstreamServer:
        """The whole-granted upstream offering ``uri`` (a resource, else a template's match;
        with ``template``, the template itself)."""
        if not isinstance(uri, str) or not uri:
            raise invalid_params("'uri' must be a string.")
        ctx.model_name = uri[:200]
        whole = await self.whole_servers(ctx)
        if template:
            tiers = [[u for u in whole if any(t.get("uriTemplate") == uri for t in u.templates)]]
        else:
            tiers = [
                [u for u in whole if any(r.get("uri") == uri for r in u.resources)],
                [
                    u
                    for u in whole
                    if any(template_matches(t.get("uriTemplate", ""), uri) for t in u.templates)
                ],
            ]
        for owners in tiers:
            if len(owners) > 1:
                ctx.decide(StageName.AUTHORIZE, Outcome.DENY, "ambiguous resource")
                raise McpFailure(
                    INVALID_PARAMS,
                    "The resource is ambiguous: several servers of this key offer it.",
                    status=409,
                    code="resource_ambiguous",
                )
            if owners:
                trace.server, trace.tool = owners[0].spec.name, "*"
                return owners[0]
        ctx.decide(StageName.AUTHORIZE, Outcome.DENY, "no such resource for this key")
        raise McpFailure(
            RESOURCE_NOT_FOUND, "Resource not found.", status=404, code="resource_not_found"
        )
