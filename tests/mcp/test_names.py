"""Names agents see: a namespaced server's tools and prompts are ``<server>__<name>``; an
un-namespaced server's keep their upstream names, and a name two servers of one key would
share is hidden and refused (a call must never land on the wrong server). Proved by what
each upstream ran and by the audit records."""

from __future__ import annotations

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.factories import records_wait
from tests.mcp.conftest import agent, record_wait, run


def _names(listed) -> list[str]:
    return sorted(item.name for item in listed)


def test_an_unnamespaced_servers_tools_and_prompts_keep_their_upstream_names(names_world):
    async def go():
        async with agent(names_world["url"], names_world["one"].secret) as session:
            tools = (await session.list_tools()).tools
            prompts = (await session.list_prompts()).prompts
            echoed = await session.call_tool("alpha_echo", {"text": "hi"})
            looked = await session.call_tool("lookup", {"q": "x"})  # only alpha's is bare
            namespaced = await session.call_tool("gamma__lookup", {"q": "y"})
            brief = await session.get_prompt("alpha_brief", {"topic": "tea"})
            return tools, prompts, echoed, looked, namespaced, brief

    tools, prompts, echoed, looked, namespaced, brief = run(go())
    assert _names(tools) == ["alpha_echo", "gamma__gamma_echo", "gamma__lookup", "lookup"]
    assert _names(prompts) == [
        "alpha_brief",
        "digest",
        "gamma__digest",
        "gamma__gamma_brief",
        "gamma__outline",
        "outline",
    ]
    assert echoed.content[0].text == "alpha echoes hi"
    assert looked.content[0].text == "alpha found x"
    assert namespaced.content[0].text == "gamma found y"
    assert "alpha brief on tea" in brief.messages[0].content.text
    assert names_world["alpha"].calls == [("alpha_echo", {"text": "hi"}), ("lookup", {"q": "x"})]
    assert names_world["gamma"].calls == [("lookup", {"q": "y"})]
    assert names_world["beta"].calls == []  # not granted: never contacted

    gateway = names_world["gateway"]
    call = record_wait(gateway, endpoint="mcp.tools/call", model_requested="alpha_echo")
    assert call.status_code == 200 and call.provider == "alpha"
    assert call.deployment == "alpha:alpha_echo"
    bare = record_wait(gateway, endpoint="mcp.tools/call", model_requested="lookup")
    assert bare.provider == "alpha" and bare.deployment == "alpha:lookup"
    prefixed = record_wait(gateway, endpoint="mcp.tools/call", model_requested="gamma__lookup")
    assert prefixed.provider == "gamma" and prefixed.deployment == "gamma:lookup"
    prompt = record_wait(gateway, endpoint="mcp.prompts/get")
    assert prompt.status_code == 200 and prompt.model_requested == "alpha_brief"
    assert prompt.provider == "alpha"


def test_a_name_two_unnamespaced_servers_share_is_hidden_and_refused(names_world):
    async def go():
        async with agent(names_world["url"], names_world["both"].secret) as session:
            tools = (await session.list_tools()).tools
            prompts = (await session.list_prompts()).prompts
            with pytest.raises(MCPError) as tool_error:
                await session.call_tool("lookup", {"q": "x"})
            with pytest.raises(MCPError) as prompt_error:
                await session.get_prompt("digest")
            with pytest.raises(MCPError) as alias_error:  # no prefixed alias around it
                await session.call_tool("alpha__lookup", {"q": "x"})
            namespaced = await session.call_tool("gamma__lookup", {"q": "z"})
            own = await session.call_tool("beta_echo", {"text": "still mine"})
            assert alias_error.value.error.data["code"] == "tool_not_found"
            return (
                tools,
                prompts,
                tool_error.value.error,
                prompt_error.value.error,
                (
                    namespaced,
                    own,
                ),
            )

    tools, prompts, tool_error, prompt_error, (namespaced, own) = run(go())
    assert _names(tools) == ["alpha_echo", "beta_echo", "gamma__gamma_echo", "gamma__lookup"]
    assert "digest" not in _names(prompts) and "gamma__digest" in _names(prompts)
    assert {"alpha_brief", "beta_brief"} <= set(_names(prompts))

    assert tool_error.code == -32602 and tool_error.data["code"] == "tool_name_ambiguous"
    assert "'lookup' is ambiguous" in tool_error.message
    assert prompt_error.code == -32602 and prompt_error.data["code"] == "prompt_name_ambiguous"
    assert names_world["alpha"].called("lookup") == []
    assert names_world["beta"].called("lookup") == []
    # Next to them, the namespaced server's lookup and beta's unique names still work.
    assert namespaced.content[0].text == "gamma found z"
    assert names_world["gamma"].called("lookup") == [{"q": "z"}]
    assert own.content[0].text == "beta echoes still mine"

    gateway = names_world["gateway"]
    refused = record_wait(gateway, endpoint="mcp.tools/call", model_requested="lookup")
    assert refused.status_code == 409 and refused.error_code == "tool_name_ambiguous"
    assert ["authorize", "deny", "ambiguous tool name"] in refused.decisions
    assert refused.provider == ""  # it went to no server
    listed = record_wait(gateway, endpoint="mcp.tools/list")
    assert ["authorize", "allow", "4 tools from 3 servers, 1 ambiguous name hidden"] in (
        listed.decisions
    )
    ok = record_wait(gateway, endpoint="mcp.tools/call", model_requested="gamma__lookup")
    assert ok.status_code == 200 and ok.provider == "gamma"


def test_completion_reaches_the_upstream_under_its_own_prompt_name(names_world):
    async def go():
        async with agent(names_world["url"], names_world["one"].secret) as session:
            namespaced = await session.complete(
                types.PromptReference(type="ref/prompt", name="gamma__outline"),
                {"name": "style", "value": "f"},
            )
            bare = await session.complete(
                types.PromptReference(type="ref/prompt", name="outline"),
                {"name": "style", "value": "fu"},
            )
            return namespaced, bare

    namespaced, bare = run(go())
    assert namespaced.completion.values == ["formal", "friendly", "funny"]
    assert bare.completion.values == ["funny"]
    assert names_world["gamma"].called("complete") == [
        {"prompt": "outline", "argument": "style", "value": "f"}
    ]
    assert names_world["alpha"].called("complete") == [
        {"prompt": "outline", "argument": "style", "value": "fu"}
    ]
    rows = [r for r in records_wait(names_world["gateway"], 3) if r.endpoint.startswith("mcp.comp")]
    by_name = {r.model_requested: r for r in rows}
    assert set(by_name) == {"gamma__outline", "outline"}
    assert by_name["gamma__outline"].provider == "gamma"
    assert by_name["gamma__outline"].deployment == "gamma:outline"
    assert by_name["outline"].provider == "alpha" and by_name["outline"].status_code == 200
