"""odock_apply for MCP: servers, their tool settings and per-level tool grants apply,
re-apply as a no-op, a bad reference changes nothing, and credentials are never printed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.management import CommandError

from apps.core.models import config_version_current
from apps.mcp.models import McpServer, McpTool, ToolGrant
from apps.tenancy.models import Project
from tests.factories import odock_apply_text

TOKEN = "up-apply-token-0123456789"
HEADER = "up-apply-header-9876543210"
LOCAL_TOKEN = "up-apply-local-5555555555"

CONFIG = """
mcp_servers:
  - name: tickets
    url: "http://127.0.0.1:9100/mcp"
    bearer_token_env: ODOCK_TEST_TICKETS_TOKEN
    tools:
      - {name: refund, requires_approval: true, rpm: 5}
      - {name: create_ticket, cost_usd: "0.25"}
  - name: wiki
    url: "http://127.0.0.1:9200/mcp"
    headers_env: {X-Wiki-Key: ODOCK_TEST_WIKI_HEADER}
  - name: local
    command: python
    args: ["-m", "local_server"]
    active: false
    namespaced: false
    environment_env: {LOCAL_API_TOKEN: ODOCK_TEST_LOCAL_TOKEN}
organizations:
  - name: acme
    tools:
      - {server: tickets}
      - {server: wiki}
    teams:
      - name: search
        projects:
          - name: assistant
            tools:
              - {server: wiki, tool: search}
            keys:
              - name: bot
                secret: "sk-odock-test-mcp-apply-bot"
                tools:
                  - {server: tickets, tool: delete_ticket, effect: deny}
                  - {server: tickets, tool: refund, unattended: true}
"""


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch):
    monkeypatch.setenv("ODOCK_TEST_TICKETS_TOKEN", TOKEN)
    monkeypatch.setenv("ODOCK_TEST_WIKI_HEADER", HEADER)
    monkeypatch.setenv("ODOCK_TEST_LOCAL_TOKEN", LOCAL_TOKEN)


def grants() -> set[tuple[str, str, str, str, bool]]:
    return {
        (g.level.split(":")[0], g.server.name, g.tool, g.effect, g.unattended)
        for g in ToolGrant.objects.select_related("server")
    }


def counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in (McpServer, McpTool, ToolGrant)}


@pytest.mark.django_db
def test_apply_creates_servers_tools_and_grants_and_never_prints_credentials(tmp_path):
    out = odock_apply_text(tmp_path, CONFIG)

    tickets = McpServer.objects.get(name="tickets")
    assert (tickets.transport, tickets.url, tickets.bearer_token) == (
        "http",
        "http://127.0.0.1:9100/mcp",
        TOKEN,
    )
    assert McpServer.objects.get(name="wiki").extra_headers() == {"X-Wiki-Key": HEADER}
    local = McpServer.objects.get(name="local")
    assert (local.transport, local.command, local.args, local.is_active, local.namespaced) == (
        "stdio",
        "python",
        ["-m", "local_server"],
        False,
        False,
    )
    assert tickets.namespaced is True  # the default
    assert local.extra_environment() == {"LOCAL_API_TOKEN": LOCAL_TOKEN}
    tools = {t.name: (t.requires_approval, t.rpm, t.cost_usd) for t in tickets.tools.all()}
    assert tools == {
        "refund": (True, 5, Decimal("0")),
        "create_ticket": (False, None, Decimal("0.25")),
    }
    project = Project.objects.get(name="assistant")
    assert ToolGrant.objects.filter(project=project).get().tool == "search"
    assert grants() == {
        ("org", "tickets", "*", "allow", False),
        ("org", "wiki", "*", "allow", False),
        ("project", "wiki", "search", "allow", False),
        ("key", "tickets", "delete_ticket", "deny", False),
        ("key", "tickets", "refund", "allow", True),
    }
    assert "created 14, updated 0, deleted 0" in out  # 3 servers, 2 tools, 4 levels, 5 grants
    assert "warning" not in out
    for secret in (TOKEN, HEADER, LOCAL_TOKEN, "sk-odock-test-mcp-apply-bot"):
        assert secret not in out


@pytest.mark.django_db
def test_second_apply_changes_nothing(tmp_path, django_capture_on_commit_callbacks):
    odock_apply_text(tmp_path, CONFIG)
    version = config_version_current()
    before = {m.__name__: set(m.objects.values_list("pk", flat=True)) for m in (McpTool, ToolGrant)}
    stored = McpServer.objects.values_list("headers", "bearer_token")
    stored_before = sorted(map(tuple, stored))

    with django_capture_on_commit_callbacks(execute=True) as second:
        out = odock_apply_text(tmp_path, CONFIG)

    assert "no changes: created 0, updated 0, deleted 0" in out
    assert second == [] and config_version_current() == version
    after = {m.__name__: set(m.objects.values_list("pk", flat=True)) for m in (McpTool, ToolGrant)}
    assert after == before
    assert sorted(map(tuple, McpServer.objects.values_list("headers", "bearer_token"))) == (
        stored_before
    )


@pytest.mark.django_db
def test_lists_replace_and_credential_changes_are_named_not_shown(tmp_path, monkeypatch):
    odock_apply_text(tmp_path, CONFIG)
    monkeypatch.setenv("ODOCK_TEST_TICKETS_TOKEN", "up-apply-token-rotated-42")
    changed = (
        CONFIG.replace('      - {name: create_ticket, cost_usd: "0.25"}\n', "")
        .replace("rpm: 5", "rpm: 7")
        .replace("                  - {server: tickets, tool: delete_ticket, effect: deny}\n", "")
    )

    out = odock_apply_text(tmp_path, changed)

    tickets = McpServer.objects.get(name="tickets")
    assert tickets.bearer_token == "up-apply-token-rotated-42"
    assert [(t.name, t.rpm) for t in tickets.tools.all()] == [("refund", 7)]
    assert not ToolGrant.objects.filter(tool="delete_ticket").exists()
    assert "updated MCP server tickets (bearer_token)" in out
    assert "deleted MCP tool setting tickets__create_ticket" in out
    assert "created 0, updated 2, deleted 2" in out
    assert "up-apply-token-rotated-42" not in out and TOKEN not in out


@pytest.mark.django_db
def test_headers_clear_with_an_empty_mapping(tmp_path):
    odock_apply_text(tmp_path, CONFIG)
    out = odock_apply_text(
        tmp_path, CONFIG.replace("headers_env: {X-Wiki-Key: ODOCK_TEST_WIKI_HEADER}", "headers: {}")
    )
    assert McpServer.objects.get(name="wiki").headers == ""
    assert "updated MCP server wiki (headers)" in out and HEADER not in out


@pytest.mark.django_db
def test_inline_credentials_are_stored_and_not_printed(tmp_path):
    text = f"""
mcp_servers:
  - name: inline
    url: "http://127.0.0.1:9300/mcp"
    bearer_token: "{TOKEN}"
    headers: {{X-Api-Key: "{HEADER}"}}
"""
    out = odock_apply_text(tmp_path, text)
    server = McpServer.objects.get(name="inline")
    assert server.bearer_token == TOKEN and json.loads(server.headers) == {"X-Api-Key": HEADER}
    assert TOKEN not in out and HEADER not in out
    assert "no changes" in odock_apply_text(tmp_path, text)


@pytest.mark.django_db
def test_bad_server_reference_names_the_path_and_changes_nothing(tmp_path):
    odock_apply_text(tmp_path, CONFIG)
    before = counts()
    bad = CONFIG.replace("{server: wiki, tool: search}", "{server: jira, tool: search}").replace(
        "rpm: 5", "rpm: 9"
    )

    with pytest.raises(CommandError) as info:
        odock_apply_text(tmp_path, bad)

    message = str(info.value)
    assert "nothing changed" in message
    assert (
        "organizations[0].teams[0].projects[0].tools[0].server: unknown MCP server 'jira'"
        in message
    )
    assert counts() == before
    assert McpTool.objects.get(name="refund").rpm == 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("server", "error"),
    [
        ("{name: a, url: 'http://x/mcp', command: run}", "mcp_servers[0]: give url"),
        ("{name: a}", "mcp_servers[0]: give url"),
        ("{name: a__b, url: 'http://x/mcp'}", "mcp_servers[0].name: a server name may not"),
        ("{name: a, url: 'not a url'}", "mcp_servers[0].url: Enter a valid URL."),
        ("{name: a, url: 'http://x/mcp', bearer_token_env: ODOCK_TEST_UNSET}", "is not set"),
        ("{name: a, url: 'http://x/mcp', headers_env: {X-K: ODOCK_TEST_UNSET}}", "headers_env.X-K"),
        ("{name: a, url: 'http://x/mcp', tools: [{name: t}, {name: t}]}", "tools[1]: duplicate"),
        ("{name: a, url: 'http://x/mcp', tools: [{name: t, rpm: 0}]}", "tools[0].rpm"),
        ("{name: a, url: 'http://x/mcp', colour: red}", "mcp_servers[0].colour: Extra inputs"),
    ],
)
def test_invalid_servers_are_refused_with_their_path(tmp_path, monkeypatch, server, error):
    monkeypatch.delenv("ODOCK_TEST_UNSET", raising=False)
    with pytest.raises(CommandError) as info:
        odock_apply_text(tmp_path, f"mcp_servers:\n  - {server}\n")
    assert error in str(info.value)
    assert counts() == {"McpServer": 0, "McpTool": 0, "ToolGrant": 0}


@pytest.mark.django_db
def test_grants_may_name_a_server_already_in_the_database(tmp_path):
    McpServer.objects.create(name="existing", url="http://127.0.0.1:9400/mcp")
    text = """
organizations:
  - name: acme
    tools:
      - {server: existing, tool: "*"}
      - {server: existing, tool: "*", effect: deny}
"""
    with pytest.raises(CommandError) as info:
        odock_apply_text(tmp_path, text)
    assert "organizations[0].tools[1]: duplicate tool grant (server, tool)" in str(info.value)

    odock_apply_text(
        tmp_path, text.replace('      - {server: existing, tool: "*", effect: deny}\n', "")
    )
    assert grants() == {("org", "existing", "*", "allow", False)}
