"""``/v1/messages`` to an Anthropic-kind deployment: native pass-through (issue 14 §2).

The anthropic SDK over real HTTP → the gateway → ``FakeAnthropicServer`` (which validates
what it receives against the SDK's own param types, the beta ones when an
``anthropic-beta`` header is sent). Asserted on what the fake recorded, what the SDK
parsed and the audit record.
"""

from __future__ import annotations

import anthropic
import httpx
import orjson
import pytest

from apps.guardrails.models import GuardrailRule
from apps.providers.models import Deployment
from fakes.anthropic_server import THINKING, FakeAnthropicServer
from tests.factories import key_create, model_create, project_create, provider_create, records_wait

UPSTREAM_KEY = "sk-ant-upstream-never-shown"
CACHE = {"type": "ephemeral"}
DOCUMENT = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."},
    "title": "Facts",
    "citations": {"enabled": True},
    "cache_control": CACHE,
}
BETAS = "interleaved-thinking-2025-05-14,context-management-2025-06-27"
EMAIL = "jane.doe@example.com"


@pytest.fixture
def claude():
    server = FakeAnthropicServer(api_key=UPSTREAM_KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def world(gateway, claude, fake_upstream):
    """Model ``claude`` on the Anthropic fake; ``mixed``: the Anthropic fake first, then an
    OpenAI deployment (priority routing); ``gpt-only`` on the OpenAI fake."""
    anthropic_provider = provider_create(
        claude.url, name="claude-main", api_key=UPSTREAM_KEY, kind="anthropic"
    )
    openai_provider = provider_create(fake_upstream.url, name="openai-main")
    model_create("claude", anthropic_provider, upstream_model="claude-up", input_per_mtok="3")
    mixed = model_create("mixed", anthropic_provider, upstream_model="claude-up")
    mixed.routing_strategy = "priority"
    mixed.save()
    Deployment.objects.create(
        model=mixed, provider=openai_provider, upstream_model="gpt-up", priority=1
    )
    model_create("gpt-only", openai_provider, upstream_model="gpt-up")
    project = project_create()
    issued = key_create(project)
    gateway.snapshots.reload()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=issued.secret, max_retries=0)
    return {
        "gateway": gateway,
        "claude": claude,
        "openai": fake_upstream,
        "client": client,
        "key": issued,
        "project": project,
    }


def _request(**extra):
    return {
        "model": "claude",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": CACHE}],
        "messages": [
            {
                "role": "user",
                "content": [DOCUMENT, {"type": "text", "text": "What colour is the sky?"}],
            }
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        **extra,
    }


def test_native_request_arrives_unchanged_and_the_answer_passes_through(world):
    client, claude = world["client"], world["claude"]
    request = _request()
    raw = client.messages.with_raw_response.create(
        **request, extra_body={"top_k": 5}, extra_headers={"anthropic-beta": BETAS}
    )
    message = raw.parse()

    received = claude.requests[-1]
    assert received["json"] == {**request, "top_k": 5, "model": "claude-up"}
    assert received["headers"]["anthropic-beta"] == BETAS
    assert received["headers"]["x-api-key"] == UPSTREAM_KEY
    assert message.model == "claude"  # the public name, not the upstream's
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THINKING and message.content[0].signature
    usage = message.usage
    assert usage.cache_creation_input_tokens > 0 and usage.cache_read_input_tokens == 0

    again = client.messages.create(**request)  # the same prefix: read from the cache now
    assert again.usage.cache_read_input_tokens == usage.cache_creation_input_tokens
    records = records_wait(world["gateway"], 2)
    first, second = records
    assert (first.endpoint, first.status_code, first.deployment) == (
        "messages",
        200,
        "claude-main:claude-up",
    )
    total = usage.input_tokens + usage.cache_creation_input_tokens
    assert (first.input_tokens, first.output_tokens, first.cached_tokens) == (
        total,
        usage.output_tokens,
        0,
    )
    assert second.cached_tokens == again.usage.cache_read_input_tokens
    assert second.input_tokens == again.usage.input_tokens + again.usage.cache_read_input_tokens
    assert not first.usage_estimated and first.cost_usd > 0


def test_native_stream_passes_thinking_and_signature_deltas_through(world):
    client = world["client"]
    with client.messages.stream(**_request()) as stream:
        kinds = [(event.type, getattr(event, "delta", None)) for event in stream]
        final = stream.get_final_message()

    delta_types = [delta.type for kind, delta in kinds if kind == "content_block_delta"]
    assert "thinking_delta" in delta_types and "signature_delta" in delta_types
    assert "text_delta" in delta_types
    assert final.model == "claude" and [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == THINKING
    assert final.usage.input_tokens > 0  # the provider's count, from message_start
    [record] = records_wait(world["gateway"], 1)
    assert record.stream and record.status_code == 200 and not record.usage_estimated
    assert record.output_tokens == final.usage.output_tokens
    assert record.input_tokens == (
        final.usage.input_tokens
        + final.usage.cache_creation_input_tokens
        + final.usage.cache_read_input_tokens
    )


def test_native_only_request_skips_the_openai_deployment_and_keeps_the_real_failure(world):
    """The Anthropic deployment fails (503 from upstream: retryable), the OpenAI one cannot
    serve ``thinking``: the answer is the upstream failure (retry later, true) — not a 400
    telling the client to drop a field an Anthropic deployment would have taken."""
    world["claude"].behavior.fail_status = 500
    client = world["client"]
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(**_request(model="mixed"))
    assert err.value.status_code == 502
    assert err.value.body["error"]["type"] == "api_error"
    assert world["openai"].requests == []

    # A plain request on the same model is served by the OpenAI deployment.
    message = client.messages.create(
        model="mixed", max_tokens=50, messages=[{"role": "user", "content": "Hello"}]
    )
    assert message.model == "mixed" and message.content[0].type == "text"
    assert world["openai"].requests[-1]["json"]["model"] == "gpt-up"

    failed, served = records_wait(world["gateway"], 2)
    rows = [row[:3] for row in failed.attempts]  # the Anthropic one is retried, too
    skipped = ["openai-main:gpt-up", 400, "unsupported_parameter"]
    assert rows[:2] == [["claude-main:claude-up", 502, "upstream_error"], skipped]
    assert rows.count(skipped) == 1 and set(map(tuple, rows)) == {tuple(skipped), tuple(rows[0])}
    assert (failed.status_code, failed.error_code) == (502, "upstream_error")
    assert served.deployment == "openai-main:gpt-up" and served.status_code == 200


def test_native_only_request_is_a_400_naming_the_field_when_nothing_can_serve_it(world):
    with pytest.raises(anthropic.BadRequestError) as err:
        world["client"].messages.create(**_request(model="gpt-only"))
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "remove 'thinking'" in err.value.body["error"]["message"]  # the first one
    assert world["openai"].requests == [] and world["claude"].requests == []
    [record] = records_wait(world["gateway"], 1)
    assert (record.status_code, record.error_code) == (400, "unsupported_parameter")
    assert [row[:3] for row in record.attempts] == [
        ["openai-main:gpt-up", 400, "unsupported_parameter"]
    ]


def test_input_redaction_reaches_the_native_body(world):
    GuardrailRule.objects.create(project=world["project"], detector="email", action="redact")
    world["gateway"].snapshots.reload()
    world["client"].messages.create(
        **_request(
            messages=[
                {"role": "user", "content": f"Write to {EMAIL}"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "t1", "name": "mail", "input": {"to": EMAIL}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": f"sent {EMAIL}"},
                        DOCUMENT | {"source": {**DOCUMENT["source"], "data": f"cc {EMAIL}"}},
                    ],
                },
            ],
            tools=[
                {
                    "name": "mail",
                    "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}},
                }
            ],
        )
    )
    sent = world["claude"].requests[-1]["json"]
    assert EMAIL not in orjson.dumps(sent).decode()
    assert sent["messages"][0]["content"] == "Write to [EMAIL_1]"
    assert sent["messages"][1]["content"][0]["input"] == {"to": "[EMAIL_1]"}
    assert sent["messages"][2]["content"][0]["content"] == "sent [EMAIL_1]"
    assert sent["messages"][2]["content"][1]["source"]["data"] == "cc [EMAIL_1]"
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # the rest as sent
    [record] = records_wait(world["gateway"], 1)
    assert record.findings == [
        {"detector": "email", "action": "redact", "stage": "input", "count": 4}
    ]


def test_output_guardrail_cuts_a_native_stream_with_an_anthropic_error_event(world):
    GuardrailRule.objects.create(
        project=world["project"],
        detector="custom",
        name="no-tok40",
        action="block",
        stage="output",
        settings={"keywords": ["tok40"]},
    )
    world["claude"].behavior.completion_tokens = 60
    world["gateway"].snapshots.reload()
    received = ""
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        world["client"].messages.stream(**_request()) as stream,
    ):
        for text in stream.text_stream:
            received += text
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "guardrail" in err.value.body["error"]["message"]
    assert "tok40" not in received and received.startswith("tok0 tok1")
    [record] = records_wait(world["gateway"], 1)
    assert record.error_code == "guardrail_blocked" and record.findings[0]["stage"] == "output"


def test_output_guardrail_redacts_a_native_answer_thinking_included(world):
    GuardrailRule.objects.create(
        project=world["project"],
        detector="custom",
        name="tok-two",
        action="redact",
        stage="output",
        settings={"keywords": ["tok2", "think"]},
    )
    world["gateway"].snapshots.reload()
    message = world["client"].messages.create(**_request())
    thinking, text = message.content
    assert "tok2" not in text.text and text.text.startswith("tok0 tok1 [")
    assert thinking.type == "thinking" and "think " not in thinking.thinking
    assert thinking.thinking.startswith("Let me [") and thinking.signature

    with world["client"].messages.stream(**_request()) as stream:
        final = stream.get_final_message()
    assert final.content[0].thinking == thinking.thinking  # streamed, the same masks
    assert final.content[1].text == text.text


def test_claude_codes_request_is_served_natively(world):
    """Claude Code 2.1.332's shape: its default model name (mapped by an alias),
    ``?beta=true``, eight betas, adaptive thinking with its display omitted,
    clear_thinking edits, effort, three cache_control markers and a mid-conversation
    system turn; streamed."""
    from apps.policies.models import ModelAlias
    from apps.providers.models import Model

    ModelAlias.objects.create(
        project=world["project"], alias="claude-opus-5-5", model=Model.objects.get(name="claude")
    )
    world["gateway"].snapshots.reload()
    betas = ",".join(
        [
            "claude-code-20250219",
            "oauth-2025-04-20",
            "interleaved-thinking-2025-05-14",
            "context-management-2025-06-27",
            "prompt-caching-scope-2026-01-05",
            "fine-grained-tool-streaming-2025-05-14",
            "effort-2025-11-24",
            "context-1m-2025-08-07",
        ]
    )
    body = {
        "model": "claude-opus-5-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": CACHE},
            {"type": "text", "text": "Environment: linux.", "cache_control": CACHE},
        ],
        "messages": [
            {"role": "user", "content": "List the files."},
            {"role": "assistant", "content": "Done: a.py, b.py."},
            {"role": "system", "content": "The user switched to plan mode."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Now plan.", "cache_control": CACHE}],
            },
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a command.",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            }
        ],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "metadata": {"user_id": "user_abc_account_x_session_y"},
    }
    headers = {
        "x-api-key": world["key"].secret,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": betas,
        "content-type": "application/json",
    }
    with httpx.stream(
        "POST",
        world["gateway"].url + "/v1/messages?beta=true",
        headers=headers,
        content=orjson.dumps(body),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())

    received = world["claude"].requests[-1]
    assert received["path"] == "/v1/messages" and received["headers"]["anthropic-beta"] == betas
    assert received["json"] == {**body, "model": "claude-up"}
    events = [
        orjson.loads(line[6:])
        for line in raw.split(b"\n")
        if line.startswith(b"data: ") and line[6:].strip()
    ]
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert events[0]["message"]["model"] == "claude-opus-5-5"  # the name it asked for
    assert events[0]["message"]["usage"]["input_tokens"] > 0
    deltas = {e["delta"]["type"] for e in events if e["type"] == "content_block_delta"}
    assert deltas == {"signature_delta", "text_delta"}  # display omitted: no thinking text
    message_stops = [e for e in events if e["type"] == "message_delta"]
    assert message_stops[0]["usage"]["output_tokens"] > 0


def test_translated_message_start_reports_the_gateways_prompt_count(world):
    """On the translated path ``message_start`` carries the gateway's count of the prompt
    (what a budget reservation uses), not 0."""
    from apps.gateway.inbound.anthropic_messages import messages_to_openai
    from apps.gateway.tokens import count_prompt_tokens

    request = {
        "model": "mixed",
        "max_tokens": 50,
        "system": "Be terse.",
        "messages": [{"role": "user", "content": "Say hello to the gateway, please."}],
    }
    world["claude"].behavior.fail_status = 500  # served by the OpenAI deployment
    with world["client"].messages.stream(**request) as stream:
        events = list(stream)
    start = events[0]
    assert start.type == "message_start"
    expected = count_prompt_tokens(messages_to_openai({**request, "stream": True}))
    assert start.message.usage.input_tokens == expected > 0


def test_count_tokens_asks_an_anthropic_deployment_and_estimates_otherwise(world):
    client, claude = world["client"], world["claude"]
    request = {
        "system": [{"type": "text", "text": "Be terse.", "cache_control": CACHE}],
        "messages": [{"role": "user", "content": [DOCUMENT, {"type": "text", "text": "Hi"}]}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    raw = client.messages.with_raw_response.count_tokens(model="claude", **request)
    assert raw.headers["x-odock-token-count"] == "provider"
    received = claude.requests[-1]
    assert received["path"] == "/v1/messages/count_tokens"
    assert received["json"] == {**request, "model": "claude-up"}
    from fakes.anthropic_server import _input_tokens

    assert raw.parse().input_tokens == _input_tokens(received["json"])

    claude.behavior.fail_status = 500  # the provider fails: the estimate, said so
    plain = {"messages": [{"role": "user", "content": "Hello there"}]}
    raw = client.messages.with_raw_response.count_tokens(model="claude", **plain)
    assert raw.headers["x-odock-token-count"] == "estimate" and raw.parse().input_tokens > 0

    openai_count = client.messages.with_raw_response.count_tokens(model="gpt-only", **plain)
    assert openai_count.headers["x-odock-token-count"] == "estimate"
    assert openai_count.parse().input_tokens == raw.parse().input_tokens
    records = records_wait(world["gateway"], 3)
    assert [r.endpoint for r in records] == ["messages.count_tokens"] * 3
    reasons = [d[2] for d in records[1].decisions if d[0] == "count_tokens"]
    assert "estimate" in reasons[0] and "upstream_error" in reasons[0]


def test_effort_reaches_an_openai_deployment_as_reasoning_effort(world):
    """Claude Code's adaptive thinking (display omitted), clear_thinking edits and effort,
    translated for an OpenAI deployment: the effort arrives as ``reasoning_effort``."""
    message = world["client"].messages.create(
        model="gpt-only",
        max_tokens=100,
        messages=[{"role": "user", "content": "Plan the change."}],
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "high"},
        extra_body={"context_management": {"edits": [{"type": "clear_thinking_20251015"}]}},
    )
    assert message.model == "gpt-only" and message.content[0].type == "text"
    sent = world["openai"].requests[-1]["json"]
    assert sent["reasoning_effort"] == "high" and sent["model"] == "gpt-up"
    assert not {"thinking", "output_config", "context_management"} & set(sent)


def test_an_image_by_file_id_is_native_only():
    from apps.gateway.errors import GatewayError
    from apps.gateway.inbound.anthropic_messages import messages_to_openai

    image = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [image]}]}
    with pytest.raises(GatewayError) as err:
        messages_to_openai(body)
    assert (err.value.code, err.value.param) == (
        "unsupported_parameter",
        "messages[0].content[0].source",
    )
    refused: list = []
    assert messages_to_openai(body, refused)["messages"][0]["content"][0]["type"] == "image_url"
    assert refused[0].param == "messages[0].content[0].source"


def test_a_native_stream_broken_mid_way_ends_with_an_anthropic_error_event(world):
    world["claude"].behavior.completion_tokens = 10
    world["claude"].behavior.disconnect_after_chunks = 3
    received = ""
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        world["client"].messages.stream(**_request()) as stream,
    ):
        for text in stream.text_stream:
            received += text
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "api_error"
    assert received == "tok0 tok1 tok2"  # what arrived before the break was passed on
    [record] = records_wait(world["gateway"], 1)
    assert record.error_code == "upstream_stream_broken" and record.usage_estimated
    assert record.input_tokens > 0  # the provider's count from message_start


def test_a_native_stream_broken_before_its_first_byte_fails_over(world):
    """Nothing reached the client: the OpenAI deployment of ``mixed`` serves a plain
    request instead, translated."""
    world["claude"].behavior.disconnect_after_chunks = -1
    with world["client"].messages.stream(
        model="mixed", max_tokens=50, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "mixed" and final.content[0].text
    [record] = records_wait(world["gateway"], 1)
    assert [row[:3] for row in record.attempts] == [
        ["claude-main:claude-up", 502, "upstream_stream_broken"],
        ["openai-main:gpt-up", 200, ""],
    ]


def test_count_tokens_does_not_ask_a_deployment_whose_circuit_is_open(world):
    client, claude = world["client"], world["claude"]
    claude.behavior.fail_status = 500
    plain = {"max_tokens": 5, "messages": [{"role": "user", "content": "Hello"}]}
    for _ in range(2):  # 3 attempts each: the circuit opens after 5 failures
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(model="claude", **plain)
    assert world["gateway"].breakers.state(claude_deployment_id()) == "open"
    calls = len(claude.requests)
    raw = client.messages.with_raw_response.count_tokens(model="claude", messages=plain["messages"])
    assert raw.headers["x-odock-token-count"] == "estimate" and len(claude.requests) == calls


def claude_deployment_id() -> int:
    return Deployment.objects.get(model__name="claude").pk


def test_the_governed_body_of_a_native_only_request_counts_what_only_it_carries():
    """Budgets reserve on ``ctx.body``: for a request only an Anthropic-kind deployment can
    serve it is a governance view (never sent) that still counts documents and server
    tools."""
    from apps.gateway.inbound.anthropic_request import messages_to_openai
    from apps.gateway.tokens import count_prompt_tokens

    plain = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }
    native = {
        **plain,
        "messages": [{"role": "user", "content": [DOCUMENT, {"type": "text", "text": "Hi"}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    refused: list = []
    governed = messages_to_openai(native, refused)
    assert [r.param for r in refused] == [
        "messages[0].content[0].cache_control",
        "messages[0].content[0]",
        "tools[0]",
    ]
    with_document = {**native, "tools": []}
    assert (
        count_prompt_tokens(governed)
        > count_prompt_tokens(messages_to_openai(with_document, []))
        > count_prompt_tokens(messages_to_openai(plain))
    )


def test_output_guardrail_blocks_a_whole_native_answer(world):
    GuardrailRule.objects.create(
        project=world["project"],
        detector="custom",
        name="no-tok3",
        action="block",
        stage="output",
        settings={"keywords": ["tok3"]},
    )
    world["gateway"].snapshots.reload()
    with pytest.raises(anthropic.BadRequestError) as err:
        world["client"].messages.create(**_request())
    assert err.value.body["type"] == "error"
    assert "guardrail 'custom.no-tok3'" in err.value.body["error"]["message"]
    assert "tok3" not in err.value.response.text.replace("no-tok3", "")
    [record] = records_wait(world["gateway"], 1)
    assert (record.status_code, record.error_code) == (400, "guardrail_blocked")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "ex"}]},
            "mcp_servers",
        ),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "ex"}]}, "tools[0]"),
    ],
)
def test_anthropics_mcp_connector_is_refused_as_ungoverned_even_natively(world, extra, param):
    with pytest.raises(anthropic.BadRequestError) as err:
        world["client"].messages.create(
            **_request(tools=extra.get("tools", [])),
            extra_body={k: v for k, v in extra.items() if k != "tools"},
            extra_headers={"anthropic-beta": "mcp-client-2025-11-20"},
        )
    error = err.value.body["error"]
    assert error["type"] == "invalid_request_error" and f"'{param}'" in error["message"]
    assert "/mcp" in error["message"]
    assert world["claude"].requests == []
    [record] = records_wait(world["gateway"], 1)
    assert (record.status_code, record.error_code) == (400, "unsupported_parameter")
