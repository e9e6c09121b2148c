"""The MCP gateway end to end: the official SDK as the agent → Odock's /mcp → two real
upstream MCP servers. Each refusal is proved by the upstream's own call log, and each
request by its audit record."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import httpx2
import pytest
from django.test import override_settings
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from apps.audit.models import RequestLog
from tests.factories import records_wait
from tests.mcp.conftest import TICKETS_TOKEN, WIKI_HEADER, agent, run
from tests.mcp.conftest import initialize_message as _init

AWS_KEY = "AKIAQYLPMN5HHHFPZAM2"


def logs(world, count: int) -> list[RequestLog]:
    return records_wait(world["gateway"], count)


def test_lists_exactly_the_granted_tools_and_calls_one(world):
    async def go():
        async with agent(world["url"], world["key"].secret) as session:
            listed = await session.list_tools()
            result = await session.call_tool(
                "tickets__create_ticket", {"title": "printer on fire", "priority": 2}
            )
            return listed, result

    listed, result = run(go())
    names = sorted(t.name for t in listed.tools)
    assert names == [
        "tickets__create_ticket",
        "tickets__grow",
        "tickets__limited",
        "tickets__refund",
        "tickets__whoami",
        "wiki__search",
    ]
    schema = next(t for t in listed.tools if t.name == "tickets__create_ticket").input_schema
    assert schema["required"] == ["title"]
    assert result.is_error is False
    assert result.content[0].text == "ticket created: printer on fire (p2)"
    assert world["tickets"].called("create_ticket") == [{"title": "printer on fire", "priority": 2}]

    rows = logs(world, 3)
    by_endpoint = {r.endpoint: r for r in rows}
    assert {"mcp.initialize", "mcp.tools/list", "mcp.tools/call"} <= set(by_endpoint)
    call = by_endpoint["mcp.tools/call"]
    assert call.status_code == 200 and call.model_requested == "tickets__create_ticket"
    assert call.provider == "tickets" and call.key_id == world["key"].key.pk
    assert call.cost_usd == Decimal("0.25")
    assert ["authorize", "allow", "granted"] in call.decisions
    assert call.upstream_ms is not None and call.latency_ms >= call.upstream_ms
    assert by_endpoint["mcp.tools/list"].status_code == 200


def test_an_ungranted_tool_is_refused_and_never_reaches_the_upstream(world):
    async def go():
        errors = {}
        async with agent(world["url"], world["key"].secret) as session:
            for name, args in (
                ("tickets__delete_ticket", {"ticket_id": 1}),  # denied at the key
                ("wiki__delete_page", {"page": "Home"}),  # not granted at the project
                ("nosuch__tool", {}),  # unknown server
            ):
                with pytest.raises(MCPError) as info:
                    await session.call_tool(name, args)
                errors[name] = info.value.error
        return errors

    errors = run(go())
    assert errors["tickets__delete_ticket"].code == -32003
    assert (
        "may not use the tool 'tickets__delete_ticket'" in errors["tickets__delete_ticket"].message
    )
    assert errors["wiki__delete_page"].code == -32003
    assert errors["nosuch__tool"].code == -32003
    assert world["tickets"].called("delete_ticket") == []
    assert world["wiki"].called("delete_page") == []

    refused = [r for r in logs(world, 4) if r.endpoint == "mcp.tools/call"]
    assert len(refused) == 3
    by_tool = {r.model_requested: r for r in refused}
    denied = by_tool["tickets__delete_ticket"]
    assert denied.status_code == 403 and denied.error_code == "tool_not_allowed"
    assert ["authorize", "deny", f"denied at key:{world['key'].key.name}"] in denied.decisions
    assert ["authorize", "deny", f"not granted at project:{world['project'].name}"] in (
        by_tool["wiki__delete_page"].decisions
    )


def test_a_secret_in_the_arguments_is_refused_naming_the_detector(world):
    async def go():
        async with agent(world["url"], world["key"].secret) as session:
            with pytest.raises(MCPError) as info:
                await session.call_tool("tickets__create_ticket", {"title": f"key {AWS_KEY}"})
            return info.value.error

    error = run(go())
    assert error.code == -32005 and "'secrets' (aws_access_key)" in error.message
    assert error.data["param"] == "arguments.title"
    assert AWS_KEY not in str(error)
    assert world["tickets"].calls == []
    [record] = [r for r in logs(world, 2) if r.endpoint == "mcp.tools/call"]
    assert record.status_code == 400 and record.error_code == "guardrail_blocked"
    assert record.finding_types == "secrets"  # the rule's name; the sub-kind beside it
    assert record.findings[0]["kind"] == "aws_access_key"
    assert record.findings[0]["action"] == "block" and AWS_KEY not in str(record.findings)
    assert record.cost_usd == 0


def test_arguments_are_validated_against_the_input_schema(world):
    async def go():
        async with agent(world["url"], world["key"].secret) as session:
            with pytest.raises(MCPError) as missing:
                await session.call_tool("tickets__create_ticket", {"priority": 1})
            with pytest.raises(MCPError) as wrong:
                await session.call_tool("tickets__create_ticket", {"title": "t", "priority": "x"})
            return missing.value.error, wrong.value.error

    missing, wrong = run(go())
    assert missing.code == -32602 and "missing required property 'title'" in missing.message
    assert wrong.code == -32602 and "arguments.priority" in wrong.message
    assert world["tickets"].calls == []


def test_the_per_tool_rate_limit_refuses_the_third_call_in_a_minute(world):
    async def go():
        async with agent(world["url"], world["key"].secret) as session:
            for _ in range(2):
                assert (await session.call_tool("tickets__limited", {})).is_error is False
            with pytest.raises(MCPError) as info:
                await session.call_tool("tickets__limited", {})
            return info.value.error

    error = run(go())
    assert error.code == -32029 and "2 calls per minute" in error.message
    assert error.data["retryAfterSeconds"] >= 1
    assert len(world["tickets"].called("limited")) == 2
    calls = [r for r in logs(world, 4) if r.endpoint == "mcp.tools/call"]
    assert [r.status_code for r in calls] == [200, 200, 429]
    assert calls[-1].error_code == "rate_limit_exceeded"


def test_a_tool_requiring_approval_is_refused_unless_granted_unattended(world):
    from apps.mcp.models import ToolGrant

    async def call():
        async with agent(world["url"], world["key"].secret) as session:
            try:
                return await session.call_tool("tickets__refund", {"amount": 5})
            except MCPError as exc:
                return exc.error

    error = run(call())
    assert error.code == -32004 and "requires approval" in error.message
    assert world["tickets"].called("refund") == []

    ToolGrant.objects.create(
        key=world["key"].key, server=world["servers"]["tickets"], tool="refund", unattended=True
    )
    world["gateway"].snapshots.reload()
    assert run(call()).content[0].text == "refunded 5"


def test_upstream_credentials_are_injected_but_never_reach_the_client(world):
    """Raw HTTP, to see every byte and header the client receives."""
    auth = {"Authorization": f"Bearer {world['key'].secret}"}
    accept = {"Accept": "application/json, text/event-stream"}
    seen: list[str] = []
    with httpx.Client(timeout=20) as http:

        def post(body: dict, session_id: str | None = None) -> httpx.Response:
            headers = {**auth, **accept}
            if session_id:
                headers["Mcp-Session-Id"] = session_id
                headers["MCP-Protocol-Version"] = "2025-11-25"
            response = http.post(world["url"], json=body, headers=headers)
            seen.append(response.text + str(response.headers))
            return response

        init = post(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            }
        )
        sid = init.headers["mcp-session-id"]
        post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
        post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
        call = post(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "tickets__whoami", "arguments": {}},
            },
            sid,
        )
        post({"jsonrpc": "2.0", "id": 4, "method": "wiki__search"}, sid)
        post(
            {
                "jsonrpc": "2.0",
                "id": 5,
                "method": "tools/call",
                "params": {"name": "wiki__search", "arguments": {"query": "x"}},
            },
            sid,
        )
    assert call.headers["content-type"] == "text/event-stream"
    assert "you sent [REDACTED]" in call.text
    assert world["tickets"].called("whoami") == [{}]  # the upstream did get the token
    assert world["wiki"].called("search") == [{"query": "x"}]  # and wiki its header
    for text in seen:
        assert TICKETS_TOKEN not in text and WIKI_HEADER not in text
    world["gateway"].recorder.flush()  # records reach the database behind the answers
    whoami = RequestLog.objects.get(model_requested="tickets__whoami")
    [finding] = whoami.findings  # in the text and the structured content
    assert (finding["detector"], finding["action"], finding["stage"]) == (
        "upstream_credential",
        "redact",
        "output",
    )


def test_sessions_versions_and_authentication(world):
    from tests.factories import key_create

    other = key_create(world["project"])
    world["gateway"].snapshots.reload()
    accept = {"Accept": "application/json, text/event-stream"}
    mine = {"Authorization": f"Bearer {world['key'].secret}", **accept}
    theirs = {"Authorization": f"Bearer {other.secret}", **accept}
    url = world["url"]
    with httpx.Client(timeout=20) as http:
        no_key = http.post(url, json=_init("2025-11-25"), headers=accept)
        assert no_key.status_code == 401 and no_key.json()["error"]["code"] == -32001
        assert "www-authenticate" in no_key.headers

        old = http.post(url, json=_init("2025-06-18"), headers=mine)
        assert old.json()["result"]["protocolVersion"] == "2025-06-18"
        future = http.post(url, json=_init("2099-01-01"), headers=mine)
        assert future.json()["result"]["protocolVersion"] == "2025-11-25"
        sid = old.headers["mcp-session-id"]

        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        with_sid = {**mine, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        assert http.post(url, json=ping, headers=with_sid).json()["result"] == {}
        assert http.post(url, json=ping, headers=mine).status_code == 400  # no session
        stolen = {**theirs, "Mcp-Session-Id": sid}
        assert http.post(url, json=ping, headers=stolen).status_code == 404  # another key's
        bad_version = {**with_sid, "MCP-Protocol-Version": "1999-01-01"}
        assert http.post(url, json=ping, headers=bad_version).status_code == 400
        unknown = {"jsonrpc": "2.0", "id": 3, "method": "nope/nope"}
        assert http.post(url, json=unknown, headers=with_sid).json()["error"]["code"] == -32601
        assert http.post(url, content=b"{", headers=with_sid).json()["error"]["code"] == -32700
        json_only = {**with_sid, "Accept": "application/json"}
        assert http.get(url, headers=json_only).status_code == 406  # GET is an event stream
        assert http.put(url, json=ping, headers=with_sid).status_code == 405

        assert http.delete(url, headers={**theirs, "Mcp-Session-Id": sid}).status_code == 404
        assert http.delete(url, headers=with_sid).status_code == 200
        assert http.post(url, json=ping, headers=with_sid).status_code == 404  # ended
    world["gateway"].recorder.flush()
    rows = RequestLog.objects.filter(endpoint__startswith="mcp")
    assert rows.filter(status_code=401, key_id=None).count() == 1
    assert rows.filter(endpoint="mcp.initialize", status_code=200).count() == 2
    assert rows.filter(endpoint="mcp.session/delete", status_code=200).count() == 1


def test_resources_and_prompts_of_servers_granted_whole(world):
    from apps.mcp.models import ToolGrant

    # The project grants wiki only `search`: no server-wide grant, so no wiki resources.
    async def go():
        async with agent(world["url"], world["key"].secret) as session:
            resources = await session.list_resources()
            prompts = await session.list_prompts()
            return resources, prompts

    resources, prompts = run(go())
    assert resources.resources == [] and prompts.prompts == []

    ToolGrant.objects.filter(project=world["project"], tool="search").update(tool="*")
    ToolGrant.objects.create(
        key=world["key"].key, server=world["servers"]["wiki"], tool="delete_page", effect="deny"
    )
    world["gateway"].snapshots.reload()

    async def again():
        async with agent(world["url"], world["key"].secret) as session:
            resources = await session.list_resources()
            page = await session.read_resource("wiki://home")
            prompts = await session.list_prompts()
            prompt = await session.get_prompt("wiki__summarize", {"page": "Home"})
            return resources, page, prompts, prompt

    resources, page, prompts, prompt = run(again())
    assert [str(r.uri) for r in resources.resources] == ["wiki://home"]
    assert page.contents[0].text == "Welcome to the wiki"
    assert [p.name for p in prompts.prompts] == ["wiki__summarize"]
    assert "Summarize the page Home" in prompt.messages[0].content.text


def test_a_tools_list_changed_upstream_refreshes_the_catalog(world):
    """The pooled session stays open; the upstream's notification alone brings the new
    tool (discovery otherwise happens only when a session opens)."""

    async def go():
        async with agent(world["url"], world["key"].secret) as session:
            before = {t.name for t in (await session.list_tools()).tools}
            await session.call_tool("tickets__grow", {})
            for _ in range(100):
                after = {t.name for t in (await session.list_tools()).tools}
                if "tickets__fresh" in after:
                    break
                await asyncio.sleep(0.03)
            called = await session.call_tool("tickets__fresh", {})
            return before, after, called

    try:
        before, after, called = run(go())
    finally:
        world["tickets"].server.remove_tool("fresh")
    assert "tickets__fresh" not in before
    assert after == before | {"tickets__fresh"}
    assert called.content[0].text == "fresh"


def test_a_foreign_origin_is_refused(world):
    """DNS rebinding: a browser page elsewhere must not reach /mcp; agents send no Origin."""
    import httpx

    headers = {"Authorization": f"Bearer {world['key'].secret}", "Accept": "application/json"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    refused = httpx.post(
        world["url"], json=body, headers={**headers, "Origin": "http://evil.example"}
    )
    assert refused.status_code == 403
    same_host = httpx.post(
        world["url"], json=body, headers={**headers, "Origin": world["gateway"].url}
    )
    assert same_host.status_code != 403
    # DNS rebinding: the attacker's name resolves to the gateway, so Host and Origin agree;
    # only a loopback or explicitly trusted origin may drive it from a browser.
    rebound = {**headers, "Host": "evil.example", "Origin": "http://evil.example"}
    assert httpx.post(world["url"], json=body, headers=rebound).status_code == 403
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://console.example"]):
        trusted = {**headers, "Origin": "https://console.example"}
        assert httpx.post(world["url"], json=body, headers=trusted).status_code != 403


def test_a_client_probing_server_discover_falls_back_to_initialize(world):
    """The SDK's default ``mode="auto"`` asks ``server/discover`` (2026-07-28) first; Odock
    answers with the revisions it serves, and the client completes the handshake."""
    from mcp.client.client import Client

    async def go():
        headers = {"Authorization": f"Bearer {world['key'].secret}"}
        async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
            transport = streamable_http_client(world["url"], http_client=http)
            async with Client(transport, mode="auto") as client:
                tools = await client.list_tools()
                return client.session.initialize_result, [t.name for t in tools.tools]

    initialized, names = run(go())
    assert initialized is not None and initialized.protocol_version == "2025-11-25"
    assert "tickets__create_ticket" in names
    world["gateway"].recorder.flush()
    discover = RequestLog.objects.get(endpoint="mcp.server/discover")
    assert discover.status_code == 200 and discover.key_id == world["key"].key.pk
