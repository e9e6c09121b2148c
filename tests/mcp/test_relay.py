"""What upstreams say to the agent while they work, relayed by the gateway: logs, progress,
sampling and elicitation requests on the call's own SSE answer; list changes and resource
updates on the agent's standalone GET stream. The agent is the official SDK client (its
callbacks), the upstreams are real MCPServer instances whose own logs prove what reached
them, and each call leaves its audit record."""

from __future__ import annotations

import asyncio
import contextlib
import time

import mcp_types as types
import pytest

from apps.guardrails.models import GuardrailRule
from apps.mcp.models import ToolGrant
from tests.factories import records_wait
from tests.mcp.conftest import BOARD_URI, in_thread, probed_agent, record_wait, run

# Logging, sampling and resources/subscribe are deprecated in the 2026 revision; the
# gateway serves the 2025 ones, where they are current.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def _text(result: types.CallToolResult) -> str:
    assert result.is_error is False, result
    return result.content[0].text


def _sampler(answer: str, seen: list):
    async def sampling(context, params: types.CreateMessageRequestParams):
        seen.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=answer),
            model="agent-llm",
        )

    return sampling


# --- logs and progress ------------------------------------------------------------------


def test_upstream_logs_reach_the_agent_at_its_level_and_in_order(relay_world):
    filtered: list[tuple[str, str]] = []
    unfiltered: list[tuple[str, str]] = []

    def collect(into: list):
        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            into.append((params.level, params.data))

        return on_log

    async def go():
        async with probed_agent(
            relay_world["url"], relay_world["key"].secret, logging_callback=collect(filtered)
        ) as (session, _):
            await session.set_logging_level("warning")
            warned = await session.call_tool("assist__chatty", {})
        # Another agent that never set a level gets every level: the upstream sent them all.
        async with probed_agent(
            relay_world["url"], relay_world["other"].secret, logging_callback=collect(unfiltered)
        ) as (session, _):
            everything = await session.call_tool("assist__chatty", {})
        return warned, everything

    warned, everything = run(go())
    assert _text(warned) == "logged" and _text(everything) == "logged"
    assert filtered == [("warning", "warning from chatty"), ("error", "error from chatty")]
    assert unfiltered == [
        ("info", "info from chatty"),
        ("warning", "warning from chatty"),
        ("error", "error from chatty"),
    ]
    assert relay_world["assist"].called("chatty") == [{}, {}]

    gateway = relay_world["gateway"]
    level = record_wait(gateway, endpoint="mcp.logging/setLevel")
    assert level.status_code == 200 and ["session", "allow", "log level warning"] in level.decisions
    call = record_wait(gateway, endpoint="mcp.tools/call", key_id=relay_world["key"].key.pk)
    assert call.status_code == 200 and call.model_requested == "assist__chatty"
    assert call.provider == "assist" and call.deployment == "assist:chatty"
    assert ["route", "allow", "assist: ok (2 notifications relayed)"] in call.decisions


def test_upstream_progress_reaches_the_agents_progress_callback(relay_world):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def go():
        async with probed_agent(relay_world["url"], relay_world["key"].secret) as (session, _):
            return await session.call_tool("assist__steps", {}, progress_callback=on_progress)

    result = run(go())
    assert _text(result) == "stepped"
    assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert relay_world["assist"].called("steps") == [{}]
    call = record_wait(relay_world["gateway"], endpoint="mcp.tools/call")
    assert call.model_requested == "assist__steps" and call.status_code == 200
    assert ["route", "allow", "assist: ok (3 notifications relayed)"] in call.decisions


# --- sampling -----------------------------------------------------------------------------


def test_sampling_is_relayed_to_the_agent_and_its_answer_to_the_upstream(relay_world):
    seen: list[types.CreateMessageRequestParams] = []

    async def go():
        async with probed_agent(
            relay_world["url"],
            relay_world["key"].secret,
            sampling_callback=_sampler("forty-two", seen),
        ) as (session, _):
            return await session.call_tool("assist__ask_llm", {"prompt": "meaning of life?"})

    result = run(go())
    assert _text(result) == "LLM said: forty-two"
    [asked] = seen
    assert asked.messages[0].content.text == "meaning of life?" and asked.max_tokens == 50
    assert relay_world["assist"].called("ask_llm") == [
        {"prompt": "meaning of life?", "answer": "forty-two"}
    ]
    call = record_wait(relay_world["gateway"], endpoint="mcp.tools/call")
    assert call.model_requested == "assist__ask_llm" and call.provider == "assist"
    assert ["relay", "allow", "sampling/createMessage"] in call.decisions


def test_sampling_is_refused_for_an_agent_without_the_capability(relay_world):
    async def go():
        async with probed_agent(relay_world["url"], relay_world["key"].secret) as (session, _):
            # Nothing may wait for an answer that cannot come.
            return await asyncio.wait_for(
                session.call_tool("assist__ask_llm", {"prompt": "anyone?"}), 5
            )

    result = run(go())
    assert _text(result) == "sampling failed: The client does not support sampling."
    assert relay_world["assist"].called("ask_llm") == [
        {"prompt": "anyone?", "error": "The client does not support sampling."}
    ]
    call = record_wait(relay_world["gateway"], endpoint="mcp.tools/call")
    assert call.status_code == 200
    assert [
        "relay",
        "deny",
        "sampling/createMessage: the agent did not declare sampling",
    ] in call.decisions


def test_an_agents_refusal_to_sample_reaches_the_upstream_as_its_error(relay_world):
    async def refuse(context, params):
        return types.ErrorData(code=-32001, message="the user said no")

    async def go():
        async with probed_agent(
            relay_world["url"], relay_world["key"].secret, sampling_callback=refuse
        ) as (session, _):
            return await session.call_tool("assist__ask_llm", {"prompt": "may I?"})

    result = run(go())
    assert _text(result) == "sampling failed: the user said no"
    assert relay_world["assist"].called("ask_llm") == [
        {"prompt": "may I?", "error": "the user said no"}
    ]
    call = record_wait(relay_world["gateway"], endpoint="mcp.tools/call")
    assert [
        "relay",
        "allow",
        "sampling/createMessage: the agent answered an error",
    ] in call.decisions


def test_concurrent_agents_of_two_keys_each_get_only_their_own_sampling(relay_world):
    """Both calls share the gateway's one pooled upstream session and are in flight at
    once (each callback waits for the other's): every request and answer must stay with
    the agent whose call caused it."""
    arrived = {"alice": asyncio.Event(), "bob": asyncio.Event()}
    seen: dict[str, list[str]] = {"alice": [], "bob": []}

    def sampler(me: str, peer: str):
        async def sampling(context, params: types.CreateMessageRequestParams):
            seen[me].append(params.messages[0].content.text)
            arrived[me].set()
            await asyncio.wait_for(arrived[peer].wait(), 5)
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(type="text", text=f"marker-{me}"),
                model="agent-llm",
            )

        return sampling

    async def one(secret: str, me: str, peer: str):
        async with probed_agent(
            relay_world["url"], secret, sampling_callback=sampler(me, peer)
        ) as (session, _):
            return await session.call_tool("assist__ask_llm", {"prompt": f"question of {me}"})

    async def go():
        return await asyncio.gather(
            one(relay_world["key"].secret, "alice", "bob"),
            one(relay_world["other"].secret, "bob", "alice"),
        )

    alice, bob = run(go())
    assert _text(alice) == "LLM said: marker-alice"
    assert _text(bob) == "LLM said: marker-bob"
    assert seen == {"alice": ["question of alice"], "bob": ["question of bob"]}
    got = {c["prompt"]: c["answer"] for c in relay_world["assist"].called("ask_llm")}
    assert got == {"question of alice": "marker-alice", "question of bob": "marker-bob"}
    gateway = relay_world["gateway"]
    for issued in (relay_world["key"], relay_world["other"]):
        call = record_wait(gateway, endpoint="mcp.tools/call", key_id=issued.key.pk)
        assert call.status_code == 200
        assert ["relay", "allow", "sampling/createMessage"] in call.decisions


# --- elicitation and guardrails -------------------------------------------------------------


def _elicit_as_ada(asked: list):
    async def elicitation(context, params):
        asked.append(params)
        return types.ElicitResult(
            action="accept", content={"name": "Ada", "email": "ada@example.com"}
        )

    return elicitation


def _ask_user(relay_world, asked: list) -> types.CallToolResult:
    async def go():
        async with probed_agent(
            relay_world["url"],
            relay_world["key"].secret,
            elicitation_callback=_elicit_as_ada(asked),
        ) as (session, _):
            return await session.call_tool("assist__ask_user", {"question": "Who are you?"})

    return run(go())


def test_an_elicited_email_reaches_the_upstream_redacted(relay_world):
    GuardrailRule.objects.create(organization=relay_world["org"], detector="email", action="redact")
    relay_world["gateway"].snapshots.reload()
    asked: list = []

    result = _ask_user(relay_world, asked)
    assert _text(result) == "user said: accept"
    [question] = asked
    assert question.message == "Who are you?"
    assert question.requested_schema["required"] == ["name", "email"]
    assert relay_world["assist"].called("ask_user") == [
        {"action": "accept", "content": {"name": "Ada", "email": "[EMAIL_1]"}}
    ]
    call = record_wait(relay_world["gateway"], endpoint="mcp.tools/call")
    assert call.status_code == 200 and call.model_requested == "assist__ask_user"
    assert ["relay", "allow", "elicitation/create"] in call.decisions
    [finding] = call.findings
    assert (finding["detector"], finding["action"], finding["stage"]) == (
        "email",
        "redact",
        "input",
    )
    assert "ada@example.com" not in str(call.findings) + str(call.decisions)


def test_an_elicited_email_blocked_by_a_guardrail_never_reaches_the_upstream(relay_world):
    GuardrailRule.objects.create(organization=relay_world["org"], detector="email", action="block")
    relay_world["gateway"].snapshots.reload()
    asked: list = []

    result = _ask_user(relay_world, asked)
    assert len(asked) == 1  # the agent was asked; its answer stopped at the gateway
    assert _text(result) == "elicitation failed: The answer was blocked by the gateway."
    assert relay_world["assist"].called("ask_user") == [
        {"error": "The answer was blocked by the gateway."}
    ]
    assert "ada@example.com" not in str(relay_world["assist"].calls)
    call = record_wait(relay_world["gateway"], endpoint="mcp.tools/call")
    assert ["relay", "deny", "elicitation/create answer blocked by 'email'"] in call.decisions
    assert call.finding_types == "email" and call.findings[0]["action"] == "block"


# --- the standalone GET stream ---------------------------------------------------------------


def test_an_upstream_tool_list_change_reaches_agents_of_that_server_only(world):
    """``grow`` makes the tickets upstream say its tool list changed (on its own stream to
    the gateway); agents whose key may use tickets hear it on their GET stream, an agent
    of a key without tickets does not."""
    from tests.factories import key_create, project_create

    stranger = key_create(project_create())  # another org: no MCP grants at all
    world["gateway"].snapshots.reload()

    async def go():
        async with (
            probed_agent(world["url"], world["key"].secret) as (session, probe),
            probed_agent(world["url"], stranger.secret) as (_, bystander),
        ):
            await probe.stream()
            await bystander.stream()
            assert _text(await session.call_tool("tickets__grow", {})) == "grown"
            [changed] = await probe.wait_for(types.ToolListChangedNotification)
            listed = {t.name for t in (await session.list_tools()).tools}
            await asyncio.sleep(0.2)  # the bystander's stream had the same chance
            return changed, listed, bystander.messages

    try:
        changed, listed, bystander_got = run(go())
    finally:
        with contextlib.suppress(Exception):  # not there if grow never ran
            world["tickets"].server.remove_tool("fresh")
    assert changed.method == "notifications/tools/list_changed"
    assert "tickets__fresh" in listed  # the gateway had discovered again before telling
    assert bystander_got == []
    assert world["tickets"].called("grow") == [{}]
    stream = record_wait(world["gateway"], endpoint="mcp.stream", key_id=world["key"].key.pk)
    assert stream.status_code == 200 and ["session", "allow", "stream opened"] in stream.decisions


def test_a_new_tool_grant_tells_streaming_agents_their_list_changed(world):
    """An admin grants ``wiki``'s ``delete_page`` to the key: once the gateway has the new
    policy, the agent's GET stream says the tool list changed, and the tool is listed."""

    async def go():
        async with probed_agent(world["url"], world["key"].secret) as (session, probe):
            await probe.stream()
            before = {t.name for t in (await session.list_tools()).tools}
            await in_thread(
                lambda: ToolGrant.objects.create(
                    project=world["project"], server=world["servers"]["wiki"], tool="delete_page"
                )
            )
            await in_thread(world["gateway"].snapshots.reload)
            # No request of any agent in between: the policy change alone must tell it.
            changed = await probe.wait_for(types.ToolListChangedNotification, timeout=2.5)
            after = {t.name for t in (await session.list_tools()).tools}
            return before, changed, after

    before, changed, after = run(go())
    assert "wiki__delete_page" not in before
    assert changed[0].method == "notifications/tools/list_changed"
    assert after == before | {"wiki__delete_page"}


def test_resource_updates_reach_only_the_sessions_subscribed(relay_world):
    """A subscribes to the board, B (another session of the same key) does not: an update
    reaches A only. Once A unsubscribed and B subscribed, the next update reaches B only.
    The upstream is subscribed while some session watches, and released when none does."""
    url, secret = relay_world["url"], relay_world["key"].secret
    updated = types.ResourceUpdatedNotification

    def watched() -> list[tuple[str, str]]:
        calls = relay_world["assist"].calls
        return [(name, args["uri"]) for name, args in calls if name.startswith("resources/")]

    async def go():
        async with (
            probed_agent(url, secret) as (a, probe_a),
            probed_agent(url, secret) as (b, probe_b),
        ):
            await probe_a.stream()
            await probe_b.stream()
            await a.subscribe_resource(BOARD_URI)
            assert _text(await b.call_tool("assist__touch", {"uri": BOARD_URI})) == "touched"
            [first] = await probe_a.wait_for(updated)
            await asyncio.sleep(0.2)  # B's stream had the same chance
            b_after_first = probe_b.of(updated)

            await a.unsubscribe_resource(BOARD_URI)
            await b.subscribe_resource(BOARD_URI)
            assert _text(await a.call_tool("assist__touch", {"uri": BOARD_URI})) == "touched"
            [second] = await probe_b.wait_for(updated)
            await asyncio.sleep(0.2)
            return first, b_after_first, second, probe_a.of(updated), watched()

    first, b_after_first, second, a_all, while_open = run(go())
    assert str(first.params.uri) == BOARD_URI and b_after_first == []
    assert str(second.params.uri) == BOARD_URI and a_all == [first]
    assert relay_world["assist"].called("touch") == [{"uri": BOARD_URI}, {"uri": BOARD_URI}]
    # Subscribed for A, released when A unsubscribed, subscribed again for B ...
    assert while_open == [
        ("resources/subscribe", BOARD_URI),
        ("resources/unsubscribe", BOARD_URI),
        ("resources/subscribe", BOARD_URI),
    ]
    # ... and released once more when B's session ended (the SDK sends DELETE on exit).
    deadline = time.monotonic() + 2
    while len(watched()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watched() == [*while_open, ("resources/unsubscribe", BOARD_URI)]

    gateway = relay_world["gateway"]
    subscribes = [r for r in records_wait(gateway, 1) if r.endpoint == "mcp.resources/subscribe"]
    assert len(subscribes) == 2
    for record in subscribes:
        assert record.status_code == 200 and record.model_requested == BOARD_URI
        assert record.provider == "assist"
        assert ["route", "allow", "subscribed at assist"] in record.decisions
    unsubscribe = record_wait(gateway, endpoint="mcp.resources/unsubscribe")
    assert unsubscribe.status_code == 200 and unsubscribe.provider == "assist"
