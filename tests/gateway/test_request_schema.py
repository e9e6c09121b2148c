"""Inbound requests against the vendors' schemas (apps/gateway/request_schema.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apps.gateway.errors import GatewayError
from apps.gateway.request_schema import ANTHROPIC_MESSAGES, CHAT_COMPLETIONS, EMBEDDINGS
from tests.vendor_specs import specs_dir

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
EMBED = {"model": "text-embedding-3-small", "input": "hi"}
MESSAGES = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def _refusal(schema, body) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        schema.check(body)
    assert err.value.status == 400 and err.value.type == "invalid_request_error"
    return err.value


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"max_tokens": "8"}, "invalid_type", "max_tokens"),
        ({"max_tokens": True}, "invalid_type", "max_tokens"),
        ({"max_tokens": 1e308}, "decimal_above_maximum_value", "max_tokens"),
        ({"max_tokens": 10**30}, "integer_above_maximum_value", "max_tokens"),
        ({"max_tokens": -5}, "integer_below_minimum_value", "max_tokens"),
        ({"max_tokens": 0}, "integer_below_minimum_value", "max_tokens"),
        ({"max_completion_tokens": 0}, "integer_below_minimum_value", "max_completion_tokens"),
        ({"temperature": "hot"}, "invalid_type", "temperature"),
        ({"temperature": 2.5}, "decimal_above_maximum_value", "temperature"),
        ({"n": 0}, "integer_below_minimum_value", "n"),
        ({"seed": 2**64}, "integer_above_maximum_value", "seed"),
        ({"model": 5}, "invalid_type", "model"),
        ({"messages": "hi"}, "invalid_type", "messages"),
        ({"messages": []}, "empty_array", "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "invalid_value", "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "missing_required_parameter", "messages[0].content"),
        ({"messages": [{"content": "x"}]}, "missing_required_parameter", "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "invalid_type", "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "invalid_value",
            "messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "missing_required_parameter",
            "messages[0].tool_call_id",
        ),
        ({"stream": "yes"}, "invalid_type", "stream"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "array_above_max_length", "stop"),
        ({"response_format": {"type": "yaml"}}, "invalid_value", "response_format.type"),
        (
            {"tools": [{"type": "function", "function": {}}]},
            "missing_required_parameter",
            "tools[0].function.name",
        ),
        ({"logit_bias": {"50256": "x"}}, "invalid_type", "logit_bias.50256"),
    ],
)
def test_chat_refusals_name_the_parameter(change, code, param):
    error = _refusal(CHAT_COMPLETIONS, {**CHAT, **change})
    assert (error.code, error.param) == (code, param), error.message
    assert f"'{param}'" in error.message


def test_a_missing_model_is_missing_and_a_wrong_one_is_not():
    assert _refusal(CHAT_COMPLETIONS, {"messages": CHAT["messages"]}).code == (
        "missing_required_parameter"
    )
    assert _refusal(CHAT_COMPLETIONS, {**CHAT, "model": 5}).code == "invalid_type"


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"dimensions": -1}, "integer_below_minimum_value", "dimensions"),
        ({"dimensions": 10**9}, "integer_above_maximum_value", "dimensions"),
        ({"encoding_format": "xml"}, "invalid_value", "encoding_format"),
        ({"input": 5}, "invalid_type", "input"),
        ({"input": []}, "empty_array", "input"),
        ({"input": ["a"] * 2049}, "array_above_max_length", "input"),
    ],
)
def test_embedding_refusals_name_the_parameter(change, code, param):
    error = _refusal(EMBEDDINGS, {**EMBED, **change})
    assert (error.code, error.param) == (code, param), error.message


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"max_tokens": 0}, "integer_below_minimum_value", "max_tokens"),
        ({"max_tokens": "8"}, "invalid_type", "max_tokens"),
        ({"temperature": "hot"}, "invalid_type", "temperature"),
        ({"temperature": 1.5}, "decimal_above_maximum_value", "temperature"),
        ({"top_k": -1}, "integer_below_minimum_value", "top_k"),
        ({"messages": []}, "empty_array", "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "invalid_value", "messages[0].role"),
        ({"thinking": {"type": "sometimes"}}, "invalid_value", "thinking.type"),
        ({"stream": 1}, "invalid_type", "stream"),
    ],
)
def test_anthropic_refusals_name_the_parameter(change, code, param):
    error = _refusal(ANTHROPIC_MESSAGES, {**MESSAGES, **change})
    assert (error.code, error.param) == (code, param), error.message


def test_unknown_fields_pass_through_wrong_known_ones_do_not():
    CHAT_COMPLETIONS.check(
        {
            **CHAT,
            "vendor_option": {"anything": [1, 2]},
            "messages": [{"role": "user", "content": "hi", "x_cache_hint": True}],
        }
    )
    EMBEDDINGS.check({**EMBED, "input_type": "query"})
    ANTHROPIC_MESSAGES.check(
        {
            **MESSAGES,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
                    ],
                }
            ],
            "future_option": 1,
        }
    )


def test_null_is_accepted_where_the_spec_says_nullable_and_refused_elsewhere():
    CHAT_COMPLETIONS.check({**CHAT, "temperature": None, "max_tokens": None, "stop": None})
    assert _refusal(CHAT_COMPLETIONS, {**CHAT, "messages": None}).param == "messages"


def test_messages_never_echo_the_offending_value():
    secret = "sk-live-0123456789abcdef0123456789abcdef"
    for body in (
        {**CHAT, "messages": [{"role": secret, "content": "x"}]},
        {**CHAT, "temperature": secret},
        {**CHAT, "response_format": {"type": secret}},
    ):
        assert secret not in _refusal(CHAT_COMPLETIONS, body).message


def _spec_examples(specs: Path, path: str) -> list[dict]:
    """The JSON bodies of the curl examples OpenAI publishes for an endpoint."""
    yaml = pytest.importorskip("yaml")
    spec = yaml.load((specs / "openai-openapi.yaml").read_text(), Loader=yaml.CSafeLoader)
    bodies = []
    examples = spec["paths"][path]["post"]["x-oaiMeta"]["examples"]
    for example in examples if isinstance(examples, list) else [examples]:
        match = re.search(r"-d '(\{.*\})'", example["request"]["curl"], re.S)
        if match:
            bodies.append(json.loads(match.group(1)))
    return bodies


def test_the_vendors_published_examples_are_valid():
    """Held-out: request bodies OpenAI wrote for its own documentation."""
    specs = specs_dir()
    chat = _spec_examples(specs, "/chat/completions")
    embeddings = _spec_examples(specs, "/embeddings")
    assert len(chat) >= 4 and embeddings
    for body in chat:
        CHAT_COMPLETIONS.check(body)
    for body in embeddings:
        EMBEDDINGS.check(body)


def test_the_committed_schemas_are_what_the_build_script_makes():
    specs_dir()
    result = subprocess.run(
        [sys.executable, "scripts/build_request_schemas.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
