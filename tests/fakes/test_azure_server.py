"""The fake Azure OpenAI upstream, exercised through the official SDK's ``AzureOpenAI`` client.

If the SDK's Azure client can talk to it, the gateway's Azure tests against the fake are
tests against Azure's wire format. No database is needed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from fakes.azure_server import DEFAULT_PORT, FakeAzureOpenAIServer, add_cli_arguments
from fakes.openai_server import TOOL_ARGUMENTS

API_KEY = "az-fake-key"
VERSION = "2024-10-21"
USER_HI = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def server() -> Iterator[FakeAzureOpenAIServer]:
    with FakeAzureOpenAIServer(
        api_key=API_KEY, deployments=["gpt-4o-dep", "embed-dep"], content_filter_word="forbidden"
    ) as fake:
        yield fake


@pytest.fixture
def client(server: FakeAzureOpenAIServer) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.url, api_key=API_KEY, api_version=VERSION, max_retries=0, timeout=10
    )


def post(server: FakeAzureOpenAIServer, path: str, body: object, **kwargs) -> httpx.Response:
    headers = kwargs.pop("headers", {"api-key": API_KEY})
    return httpx.post(server.url + path, json=body, headers=headers, **kwargs)


def test_chat_through_the_azure_client(
    server: FakeAzureOpenAIServer, client: openai.AzureOpenAI
) -> None:
    server.behavior.completion_tokens = 5
    reply = client.chat.completions.create(model="gpt-4o-dep", messages=USER_HI)

    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    extra = reply.model_extra or {}
    assert extra["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    choice_extra = reply.choices[0].model_extra or {}
    assert choice_extra["content_filter_results"]["violence"] == {
        "filtered": False,
        "severity": "safe",
    }
    sent = server.requests[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o-dep/chat/completions"
    assert sent["query"] == {"api-version": VERSION}
    assert sent["headers"]["api-key"] == API_KEY
    assert "authorization" not in sent["headers"]


def test_stream_starts_with_prompt_filter_results_and_ends_with_usage(
    server: FakeAzureOpenAIServer, client: openai.AzureOpenAI
) -> None:
    server.behavior.completion_tokens = 4
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-dep",
            messages=USER_HI,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = chunks[0]
    assert first.choices == [] and first.id == ""
    assert (first.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["tok0", "tok1", "tok2", "tok3"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert all("content_filter_results" in (c.choices[0].model_extra or {}) for c in content)


def test_stream_wire_format(server: FakeAzureOpenAIServer) -> None:
    body = {"messages": USER_HI, "stream": True}
    response = post(
        server, f"/openai/deployments/gpt-4o-dep/chat/completions?api-version={VERSION}", body
    )
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    leading = json.loads(events[0][len("data: ") :])
    assert leading["choices"] == [] and "prompt_filter_results" in leading
    role = json.loads(events[1][len("data: ") :])
    assert role["model"] == "gpt-4o-dep"  # no model in the body: the deployment's name
    assert role["choices"][0]["delta"]["role"] == "assistant"


def test_tool_call_and_round_trip(client: openai.AzureOpenAI) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="gpt-4o-dep", messages=question, tools=[WEATHER_TOOL]
    )
    [call] = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == TOOL_ARGUMENTS
    assert first.choices[0].finish_reason == "tool_calls"
    answer = client.chat.completions.create(
        model="gpt-4o-dep",
        messages=[
            *question,
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(
            model="gpt-4o-dep",
            messages=[*question, {"role": "tool", "tool_call_id": "call_x", "content": "Sunny"}],
        )
    assert "preceeding message with 'tool_calls'" in excinfo.value.message


def test_embeddings(server: FakeAzureOpenAIServer, client: openai.AzureOpenAI) -> None:
    result = client.embeddings.create(model="embed-dep", input=["a", "b"], encoding_format="float")
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    assert server.requests[-1]["path"] == "/openai/deployments/embed-dep/embeddings"


def test_models_list(client: openai.AzureOpenAI) -> None:
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def test_api_version_is_required(server: FakeAzureOpenAIServer) -> None:
    response = post(
        server, "/openai/deployments/gpt-4o-dep/chat/completions", {"messages": USER_HI}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and "api-version" in error["message"]


def test_wrong_or_missing_key_is_401(server: FakeAzureOpenAIServer) -> None:
    bad = openai.AzureOpenAI(
        azure_endpoint=server.url, api_key="wrong", api_version=VERSION, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as excinfo:
        bad.chat.completions.create(model="gpt-4o-dep", messages=USER_HI)
    assert excinfo.value.body["code"] == "401"
    path = f"/openai/deployments/gpt-4o-dep/chat/completions?api-version={VERSION}"
    # Azure's deployment-style API wants its own key header, not a bearer token.
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert post(server, path, {"messages": USER_HI}, headers=bearer).status_code == 401


def test_unknown_deployment_is_404(client: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.chat.completions.create(model="no-such-dep", messages=USER_HI)
    assert excinfo.value.body["code"] == "DeploymentNotFound"


def test_body_is_validated_like_openai_but_model_is_optional(
    server: FakeAzureOpenAIServer,
) -> None:
    path = f"/openai/deployments/gpt-4o-dep/chat/completions?api-version={VERSION}"
    assert post(server, path, {"messages": USER_HI}).status_code == 200
    response = post(server, path, {"messages": USER_HI, "temperature": "hot"})
    assert response.status_code == 400
    assert "temperature" in response.json()["error"]["message"]
    response = post(server, path, {"messages": USER_HI, "odock_key": "x"})
    assert response.status_code == 400 and "odock_key" in response.json()["error"]["message"]


def test_content_filter_word_answers_azure_prompt_filter_400(
    server: FakeAzureOpenAIServer, client: openai.AzureOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(
            model="gpt-4o-dep",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Something FORBIDDEN"}]}
            ],
        )
    body = excinfo.value.body
    assert body["code"] == "content_filter" and body["param"] == "prompt"
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["innererror"]["content_filter_result"]["violence"]["filtered"] is True
    assert len(server.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_completion_filter_word_ends_with_content_filter(
    server: FakeAzureOpenAIServer, client: openai.AzureOpenAI, stream: bool
) -> None:
    server.completion_filter_word = "violent"
    server.behavior.completion_tokens = 8
    messages = [{"role": "user", "content": "tell a violent story"}]
    if stream:
        chunks = list(
            client.chat.completions.create(model="gpt-4o-dep", messages=messages, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        reply = client.chat.completions.create(model="gpt-4o-dep", messages=messages)
        text, finish = reply.choices[0].message.content or "", reply.choices[0].finish_reason
        flagged = (reply.choices[0].model_extra or {})["content_filter_results"]["violence"]
        assert flagged["filtered"] is True
    assert finish == "content_filter" and len(text.split()) == 4


def test_v1_surface_with_the_plain_openai_client(server: FakeAzureOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/openai/v1", api_key=API_KEY, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-dep", messages=USER_HI)
    assert reply.model == "gpt-4o-dep" and reply.choices[0].message.content
    assert server.requests[-1]["path"] == "/openai/v1/chat/completions"
    assert server.requests[-1]["query"] == {}
    assert (
        post(server, "/openai/v1/embeddings", {"model": "embed-dep", "input": "x"}).status_code
        == 200
    )
    response = post(server, "/openai/v1/chat/completions", {"model": "other", "messages": USER_HI})
    assert response.status_code == 404 and response.json()["error"]["code"] == "DeploymentNotFound"
    response = post(server, "/openai/v1/chat/completions", {"messages": USER_HI})
    assert response.status_code == 400 and "model" in response.json()["error"]["message"]


def test_fail_status_has_azure_error_shape(
    server: FakeAzureOpenAIServer, client: openai.AzureOpenAI
) -> None:
    server.behavior.fail_status = 429
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.chat.completions.create(model="gpt-4o-dep", messages=USER_HI)
    assert excinfo.value.response.headers["retry-after"] == "1"
    assert set(excinfo.value.response.json()["error"]) == {"code", "message"}


def test_disconnect_after_chunks_counts_content_chunks(server: FakeAzureOpenAIServer) -> None:
    server.behavior.disconnect_after_chunks = 2
    path = f"/openai/deployments/gpt-4o-dep/chat/completions?api-version={VERSION}"
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            server.url + path,
            json={"messages": USER_HI, "stream": True},
            headers={"api-key": API_KEY},
        ) as r,
    ):
        lines.extend(line for line in r.iter_lines() if line)
    assert len(lines) == 4  # prompt filter + role chunk + 2 content chunks


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        ["--deployment", "a", "--deployment", "b", "--content-filter-word", "bad"]
    )
    assert args.port == DEFAULT_PORT and args.deployment == ["a", "b"]
    assert args.content_filter_word == "bad" and args.completion_filter_word is None


def test_cli_serves_until_terminated(run_cli: Callable[..., str]) -> None:
    args = ["--api-key", API_KEY, "--deployment", "dep", "--content-filter-word", "forbidden"]
    url = run_cli("fakes.azure_server", "Azure OpenAI", *args)
    cli = openai.AzureOpenAI(azure_endpoint=url, api_key=API_KEY, api_version=VERSION)
    answer = cli.chat.completions.create(model="dep", messages=USER_HI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError):  # the CLI's filter word reached the server
        cli.chat.completions.create(
            model="dep", messages=[{"role": "user", "content": "forbidden"}]
        )
    with pytest.raises(openai.NotFoundError):  # and its deployment list
        cli.chat.completions.create(model="other", messages=USER_HI)  # type: ignore[arg-type]
