"""OpenAI chat fidelity on the translating kinds (anthropic, gemini, bedrock), issue 14 §3.

The official ``openai`` SDK over real HTTP → the gateway → each kind's fake upstream (which
validates what it receives against the provider SDK's own types): structured output with
``response_format`` (``chat.completions.parse`` with a pydantic model, streamed too), every
forwarded parameter arriving in the provider's own shape (read from the fake's recording),
and every refused one a 400 ``unsupported_parameter`` naming the field, with nothing sent
upstream and nothing spent. Pure tests of the tables and the schema conversion come first.
"""

from __future__ import annotations

import importlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import openai
import orjson
import pytest
from pydantic import BaseModel

from apps.gateway import request_schema
from apps.gateway.errors import GatewayError
from apps.gateway.governance import budget_key
from apps.gateway.providers.anthropic.translate import openai_to_anthropic
from apps.gateway.providers.bedrock.translate import openai_to_converse
from apps.gateway.providers.gemini.translate import gemini_schema, openai_to_gemini
from apps.gateway.providers.parameters import COMMON, ONE, TEXT_ONLY, ZERO, check_parameters
from apps.keys.models import VirtualKey
from apps.policies.models import Budget
from apps.providers.models import Model
from fakes.anthropic_server import validate_request as anthropic_validate
from fakes.bedrock_server import validate_converse
from fakes.registry import FAKES
from fakes.structured import sample
from tests.factories import records_wait
from tests.gateway.providers.conftest import served_by, with_openai_fallback
from tests.gateway.tool_calls import WEATHER_TOOL

TRANSLATING = ("anthropic", "gemini", "bedrock")
TRANSLATE = {
    "anthropic": lambda body: openai_to_anthropic(body, "claude-up"),
    "gemini": openai_to_gemini,
    "bedrock": openai_to_converse,
}
HI = [{"role": "user", "content": "Hi"}]


class Forecast(BaseModel):
    city: str
    temp_c: float
    conditions: Literal["sunny", "cloudy", "rain"]
    days: list[int]


@pytest.fixture(params=TRANSLATING)
def translated(request, gateway):
    """``(kind, gateway, openai client, fake)`` with model ``m`` served by the kind."""
    with served_by(request.param, gateway) as (kind, gw, secret, server):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
        yield kind, gw, client, server


# --------------------------------------------------------------------------- pure


def test_the_default_rules_take_the_default_and_nothing_else():
    assert ONE.accepts(1) and not ONE.accepts(2) and not ONE.accepts(True)
    assert ZERO.accepts(0) and ZERO.accepts(0.0) and not ZERO.accepts(False)
    assert not ZERO.accepts(0.5)
    assert TEXT_ONLY.accepts(["text"]) and not TEXT_ONLY.accepts(["text", "audio"])
    check_parameters({"n": 1, "logprobs": False, "seed": None}, COMMON, "k")  # defaults, null
    allowed_tools = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}
    for body, param in (
        ({"n": True}, "n"),
        ({"logprobs": 0}, "logprobs"),
        ({"x": 1}, "x"),
        ({"tool_choice": allowed_tools}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
    ):
        with pytest.raises(GatewayError) as err:
            check_parameters(body, COMMON, "k")
        assert (err.value.code, err.value.param) == ("unsupported_parameter", param)
        assert "not supported by k deployments" in err.value.message


def test_every_field_of_openais_chat_schema_has_a_decision():
    """A field OpenAI adds to the chat API gets a conscious entry in ``COMMON`` (and so in
    every kind's table), not an accident of the default."""
    schema = orjson.loads(
        (
            Path(request_schema.__file__).parent / "request_schemas/openai_chat_completions.json"
        ).read_bytes()
    )
    stack, fields = [schema], set()
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "messages" in (node.get("properties") or {}):
                fields |= set(node["properties"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert "seed" in fields and "response_format" in fields
    assert fields - set(COMMON) == set()
    for kind in TRANSLATING:
        table = importlib.import_module(f"apps.gateway.providers.{kind}.translate").PARAMETERS
        assert set(COMMON) <= set(table)


@pytest.mark.parametrize("kind", TRANSLATING)
def test_an_unknown_field_is_refused_not_dropped(kind):
    with pytest.raises(GatewayError) as err:
        TRANSLATE[kind]({"model": "m", "messages": HI, "vendor_knob": 3})
    assert (err.value.status, err.value.code) == (400, "unsupported_parameter")
    assert err.value.param == "vendor_knob" and kind in err.value.message


def test_gemini_schema_converts_const_and_refuses_what_gemini_would_ignore():
    schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "x"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        },
        "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "string"}}}},
        "required": ["kind"],
        "additionalProperties": False,
    }
    converted = gemini_schema(schema, strict=True)
    assert converted["properties"]["kind"] == {"enum": ["x"]}
    assert converted["$defs"] == schema["$defs"] and converted["required"] == ["kind"]

    weaker = json.loads(json.dumps(schema))
    weaker["$defs"]["Item"]["properties"]["id"]["pattern"] = "^[a-z]+$"
    with pytest.raises(GatewayError) as err:
        gemini_schema(weaker, strict=True)
    assert err.value.param == "response_format"
    assert "$defs.Item.properties.id.pattern" in err.value.message
    # Without strict, OpenAI does not enforce the schema either: sent as is.
    assert gemini_schema(weaker, strict=False)["$defs"] == weaker["$defs"]


PDF_DATA = "data:application/pdf;base64,JVBERi0xLjQK"
PDF = {"type": "file", "file": {"filename": "q3.pdf", "file_data": PDF_DATA}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def test_pdf_files_become_documents_and_audio_is_refused_by_name():
    content = [{"type": "text", "text": "Sum up"}, PDF]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    anthropic_body = openai_to_anthropic(body, "claude-up")
    assert anthropic_body["messages"][0]["content"][1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
        "title": "q3.pdf",
    }
    assert anthropic_validate("messages", anthropic_body) is None
    converse = openai_to_converse(body)
    assert converse["messages"][0]["content"][1] == {
        "document": {"format": "pdf", "name": "document-0-1", "source": {"bytes": "JVBERi0xLjQK"}}
    }
    bedrock_model = FAKES["bedrock"].upstream_model
    assert validate_converse("Converse", bedrock_model, converse) is None
    for kind in ("anthropic", "bedrock"):
        with pytest.raises(GatewayError) as err:
            TRANSLATE[kind]({**body, "messages": [{"role": "user", "content": [AUDIO]}]})
        where = "messages[0].content[0]"
        assert (err.value.code, err.value.param) == ("unsupported_parameter", where)


def test_the_fakes_structured_answer_fits_the_schema():
    schema = openai.lib._pydantic.to_strict_json_schema(Forecast)
    assert Forecast.model_validate(sample(schema))


# --------------------------------------------------------------------------- structured output


def _sent_schema(kind: str, sent: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema as the provider received it, in its own shape."""
    if kind == "anthropic":
        output_format = sent["output_config"]["format"]
        assert output_format["type"] == "json_schema"
        return output_format["schema"]
    if kind == "gemini":
        config = sent["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        return config["responseJsonSchema"]
    text_format = sent["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    definition = text_format["structure"]["jsonSchema"]
    assert definition["name"] == "Forecast"
    return json.loads(definition["schema"])


def test_structured_output_parses_through_every_kind(translated):
    kind, gateway, client, server = translated
    ask = [{"role": "user", "content": "Forecast for Paris"}]

    parsed = client.chat.completions.parse(model="m", messages=ask, response_format=Forecast)
    choice = parsed.choices[0]
    assert isinstance(choice.message.parsed, Forecast) and choice.finish_reason == "stop"
    schema = _sent_schema(kind, server.requests[-1]["json"])
    assert set(schema["properties"]) == {"city", "temp_c", "conditions", "days"}
    assert schema["properties"]["conditions"]["enum"] == ["sunny", "cloudy", "rain"]

    with client.chat.completions.stream(
        model="m", messages=ask, response_format=Forecast
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Forecast)
    assert final.choices[0].finish_reason == "stop"

    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=ask,
            stream=True,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "Forecast",
                    "strict": True,
                    "schema": openai.lib._pydantic.to_strict_json_schema(Forecast),
                },
            },
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert Forecast.model_validate(json.loads(text))
    assert len(server.requests) == 3
    assert all(r.status_code == 200 for r in records_wait(gateway, 3))


def test_structured_output_combines_with_the_clients_own_tools(translated):
    """Native structured output leaves the client's tools as they are (a forced tool would
    have replaced them): both reach the provider, and the tool call still comes back."""
    kind, _gateway, client, server = translated
    answer = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Forecast", "schema": Forecast.model_json_schema()},
        },
    )
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    sent = server.requests[-1]["json"]
    _sent_schema(kind, sent)
    tools = sent["toolConfig"]["tools"] if kind == "bedrock" else sent["tools"]
    assert len(tools) == 1


def test_json_mode_is_served_by_gemini_and_refused_elsewhere(translated):
    kind, gateway, client, server = translated
    if kind == "gemini":
        answer = client.chat.completions.create(
            model="m", messages=HI, response_format={"type": "json_object"}
        )
        assert isinstance(json.loads(answer.choices[0].message.content), dict)
        assert server.requests[-1]["json"]["generationConfig"] == {
            "responseMimeType": "application/json"
        }
        return
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="m", messages=HI, response_format={"type": "json_object"}
        )
    assert err.value.body["code"] == "unsupported_parameter"
    assert err.value.body["param"] == "response_format"
    assert f"not supported by {kind} deployments" in err.value.body["message"]
    assert server.requests == []
    [record] = records_wait(gateway, 1)
    assert record.status_code == 400 and record.cost_usd == 0


# --------------------------------------------------------------------------- forwarded

# Per kind: what the client sends (beyond model and messages), and what must arrive.
FORWARDED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "anthropic": (
        {
            "stop": ["END"],
            "user": "end-user-7",
            "service_tier": "default",
            "reasoning_effort": "high",
            "max_completion_tokens": 300,
            "tools": [WEATHER_TOOL],
            "parallel_tool_calls": False,
            # The defaults: accepted, and nothing to send.
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "temperature": 0.2,
            "store": False,
            "prompt_cache_key": "conversation-42",
        },
        {
            "temperature": 0.2,
            "top_k": 5,
            "cache_control": {"type": "ephemeral"},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "end-user-7"},
            "service_tier": "standard_only",
            "output_config": {"effort": "high"},
            "max_tokens": 300,
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        },
    ),
    "gemini": (
        {
            "stop": "END",
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "temperature": 0.3,
            "top_p": 0.9,
            "n": 1,
            "max_completion_tokens": 300,
            "reasoning_effort": "low",
            "user": "end-user-7",
            "logprobs": False,
            "prompt_cache_key": "conversation-42",  # a cache hint: accepted, nothing to send
        },
        {
            "generationConfig": {
                "stopSequences": ["END"],
                "seed": 7,
                "presencePenalty": 0.5,
                "frequencyPenalty": 0.25,
                "temperature": 0.3,
                "topP": 0.9,
                "candidateCount": 1,
                "maxOutputTokens": 300,
                "topK": 5,
                "thinkingConfig": {"thinkingLevel": "LOW"},
            }
        },
    ),
    "bedrock": (
        {
            "stop": ["END", "STOP"],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_completion_tokens": 300,
            "metadata": {"team": "search"},
            "service_tier": "flex",
            "reasoning_effort": "medium",
            "user": "end-user-7",
            "n": 1,
            "prompt_cache_key": "conversation-42",  # a cache hint: accepted, nothing to send
        },
        {
            "inferenceConfig": {
                "stopSequences": ["END", "STOP"],
                "temperature": 0.3,
                "topP": 0.9,
                "maxTokens": 300,
            },
            "requestMetadata": {"team": "search"},
            "serviceTier": {"type": "flex"},
            "outputConfig": {"effort": "medium"},
        },
    ),
}
EXTRA_BODY = {"gemini": {"top_k": 5}, "anthropic": {"top_k": 5}}


def test_forwarded_parameters_arrive_in_the_providers_shape(translated):
    kind, gateway, client, server = translated
    params, expected = FORWARDED[kind]
    for stream in (False, True):
        answer = client.chat.completions.create(
            model="m", messages=HI, stream=stream, extra_body=EXTRA_BODY.get(kind), **params
        )
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
        else:
            assert answer.choices[0].message.content
        sent = server.requests[-1]["json"]
        for field, value in expected.items():
            assert sent[field] == value, (kind, stream, field, sent.get(field))
        assert "n" not in sent  # 1, the default: nothing to send
        assert "prompt_cache_key" not in json.dumps(sent)
    assert [r.status_code for r in records_wait(gateway, 2)] == [200, 200]


def test_gemini_log_probabilities_come_back_in_openais_shape(gateway):
    """``logprobs`` / ``top_logprobs`` → ``responseLogprobs`` / ``logprobs``; Gemini's
    ``logprobsResult`` → the choice's ``logprobs`` (non-streamed and per chunk)."""
    with served_by("gemini", gateway) as (_kind, gw, secret, server):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
        server.behavior.completion_tokens = 3
        answer = client.chat.completions.create(
            model="m", messages=HI, logprobs=True, top_logprobs=2
        )
        config = server.requests[-1]["json"]["generationConfig"]
        assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)
        content = answer.choices[0].logprobs.content
        assert "".join(t.token for t in content) == answer.choices[0].message.content
        assert [t.logprob for t in content] == [0.0, -0.25, -0.5]
        assert content[1].bytes == list(b" tok1")
        assert [a.token for a in content[1].top_logprobs] == [" tok1", "alt1"]

        chunks = list(
            client.chat.completions.create(model="m", messages=HI, logprobs=True, stream=True)
        )
        streamed = [
            t.token for c in chunks if c.choices and c.choices[0].logprobs
            for t in c.choices[0].logprobs.content
        ]  # fmt: skip
        assert streamed == ["tok0", " tok1", " tok2"]

        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=HI, top_logprobs=2)
        assert err.value.body["param"] == "logprobs"


@pytest.mark.parametrize("kind", ["gemini", "bedrock"])
def test_parallel_tool_calls_false_returns_one_call_where_the_provider_has_no_switch(kind, gateway):
    """Gemini and Converse cannot be told to make one call per turn: the gateway keeps the
    client's ``parallel_tool_calls: false`` on the answer (the first call only)."""
    with served_by(kind, gateway) as (_kind, gw, secret, server):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
        setattr(server, "function_calls" if kind == "gemini" else "tool_uses", 3)
        ask = {
            "model": "m",
            "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
            "tools": [WEATHER_TOOL],
        }
        assert len(client.chat.completions.create(**ask).choices[0].message.tool_calls) == 3
        one = client.chat.completions.create(**ask, parallel_tool_calls=False)
        [call] = one.choices[0].message.tool_calls
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        assert one.choices[0].finish_reason == "tool_calls"
        chunks = list(client.chat.completions.create(**ask, parallel_tool_calls=False, stream=True))
        calls = [
            d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()
        ]  # fmt: skip
        assert {d.index for d in calls} == {0}
        assert "".join(d.function.arguments or "" for d in calls) == '{"city":"Paris"}'
        assert "parallel_tool_calls" not in json.dumps(server.requests[-1]["json"])


# --------------------------------------------------------------------------- refused

# Per kind: fields (with a value that asks for something) the kind cannot carry.
REFUSED: dict[str, list[tuple[str, Any]]] = {
    "anthropic": [
        ("seed", 7),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("n", 2),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -0.5),
        ("logit_bias", {"50256": -100}),
        ("temperature", 1.5),
        ("reasoning_effort", "minimal"),
        ("service_tier", "flex"),
        ("metadata", {"team": "search"}),
        ("store", True),
        ("verbosity", "high"),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("web_search_options", {}),
        ("prompt_cache_retention", "24h"),
    ],
    "gemini": [
        ("n", 3),
        ("logit_bias", {"50256": -100}),
        ("prompt_cache_retention", "24h"),
        ("service_tier", "priority"),
        ("metadata", {"team": "search"}),
        ("store", True),
        ("safety_identifier", "u-1"),
        ("reasoning_effort", "none"),
        ("audio", {"voice": "alloy", "format": "wav"}),
    ],
    "bedrock": [
        ("seed", 7),
        ("top_k", 5),
        ("presence_penalty", 0.5),
        ("logprobs", True),
        ("n", 2),
        ("prompt_cache_retention", "24h"),
        ("service_tier", "scale"),
        ("reasoning_effort", "none"),
        ("store", True),
        ("verbosity", "low"),
    ],
}


def test_refused_parameters_name_the_field_send_nothing_and_spend_nothing(translated):
    kind, gateway, client, server = translated
    budget = Budget.objects.create(
        key=VirtualKey.objects.get(), limit_usd=Decimal("5"), period="total"
    )
    gateway.snapshots.reload()
    refused = REFUSED[kind]
    for field, value in refused:
        body: dict[str, Any] = {field: value}
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=HI, extra_body=body)
        error = err.value.body
        assert (error["code"], error["param"]) == ("unsupported_parameter", field), field
        assert f"'{field}' is not supported by {kind} deployments" in error["message"]
    assert server.requests == []  # nothing ever reached the provider
    records = records_wait(gateway, len(refused))
    assert len(records) == len(refused)
    assert all(r.status_code == 400 and r.cost_usd == 0 for r in records)
    spent_key = budget_key(budget.pk, "total")
    assert gateway.state_store.spent(spent_key) == 0
    assert gateway.state_store.reserved(spent_key) == 0


def test_a_refusing_deployment_is_passed_over_for_one_that_carries_the_field(
    translated, fake_upstream
):
    """Routing fails over per attempt: the provider kind that cannot carry ``seed`` is
    skipped (no attempt used, nothing sent), the OpenAI deployment serves it as is."""
    kind, gateway, _client, server = translated
    if kind == "gemini":
        pytest.skip("gemini carries seed")
    gateway, client = with_openai_fallback(gateway, Model.objects.get(name="m"), fake_upstream)
    answer = client.chat.completions.create(model="m", messages=HI, seed=7)
    assert answer.choices[0].message.content
    assert server.requests == []
    assert fake_upstream.requests[-1]["json"]["seed"] == 7
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200 and record.deployment == "openai-backup:gpt-backup"
    assert [(a[1], a[2]) for a in record.attempts] == [(400, "unsupported_parameter"), (200, "")]
