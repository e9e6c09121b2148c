"""The MCP part of the policy snapshot, and the grant decision (pure; no ORM here).

Built off the hot path by ``apps.mcp.compile`` whenever the config version changes, so a
request reads immutable dicts, never the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.gateway.snapshot import Identity

SEPARATOR = "__"  # namespaced tool names: <server>__<tool>


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    transport: str  # "http" | "stdio"
    url: str
    command: str = ""
    args: tuple[str, ...] = ()
    namespaced: bool = True
    # Injected upstream, never sent to a client (repr hidden so logs do not show them):
    # HTTP headers, or a stdio command's environment.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def exposed(self, name: str) -> str:
        """The name agents see for one of its tools or prompts."""
        return f"{self.name}{SEPARATOR}{name}" if self.namespaced else name

    @property
    def secrets(self) -> tuple[str, ...]:
        """Credential values, scrubbed from anything that could reach a client."""
        return tuple(v for _, v in (*self.headers, *self.env) if len(v) >= 6)


@dataclass(frozen=True, slots=True)
class ToolSettings:
    tool_id: int
    requires_approval: bool = False
    rpm: int | None = None
    cost_micro: int = 0  # micro-USD per call


DEFAULT_TOOL = ToolSettings(tool_id=0)


@dataclass(frozen=True, slots=True)
class Grant:
    server: str
    tool: str  # upstream name or "*"
    allow: bool
    unattended: bool = False

    def matches(self, server: str, tool: str) -> bool:
        return self.server == server and self.tool in (tool, "*")


@dataclass(frozen=True, slots=True)
class McpPolicy:
    version: int
    servers: dict[str, ServerSpec]
    tools: dict[tuple[str, str], ToolSettings]
    # ("org" | "team" | "project" | "key", id) -> that level's grants
    grants: dict[tuple[str, int], tuple[Grant, ...]]

    @classmethod
    def empty(cls) -> McpPolicy:
        return cls(version=-1, servers={}, tools={}, grants={})

    def settings_of(self, server: str, tool: str) -> ToolSettings:
        return self.tools.get((server, tool), DEFAULT_TOOL)


@dataclass(frozen=True, slots=True)
class GrantDecision:
    allowed: bool
    unattended: bool
    reason: str


def _levels(identity: Identity) -> list[tuple[tuple[str, int], str]]:
    return [
        (("org", identity.org_id), f"org:{identity.org_name}"),
        (("team", identity.team_id), f"team:{identity.team_name}"),
        (("project", identity.project_id), f"project:{identity.project_name}"),
        (("key", identity.key_id), f"key:{identity.key_name}"),
    ]


def decide(policy: McpPolicy, identity: Identity, server: str, tool: str) -> GrantDecision:
    """Intersected down the hierarchy: every level with allow grants must allow the tool,
    some level must, and a matching deny at any level wins. ``tool="*"`` asks about the
    whole server (resources and prompts need a server-wide grant)."""
    granted = False
    unattended = False
    for level_key, label in _levels(identity):
        grants = policy.grants.get(level_key)
        if not grants:
            continue
        allows = [g for g in grants if g.allow]
        for g in grants:
            if not g.allow and g.matches(server, tool):
                return GrantDecision(False, False, f"denied at {label}")
        if not allows:
            continue
        matching = [g for g in allows if g.matches(server, tool)]
        if not matching:
            return GrantDecision(False, False, f"not granted at {label}")
        granted = True
        unattended = unattended or any(g.unattended for g in matching)
    if not granted:
        return GrantDecision(False, False, "no grant at any level")
    return GrantDecision(True, unattended, "granted")
