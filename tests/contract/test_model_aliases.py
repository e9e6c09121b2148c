"""Model aliases (a name such as Claude Code's ``claude-sonnet-5`` mapped to a served
model) in every answer shape: listed and retrieved as OpenAI ``Model`` objects, and
answered (chat, Messages) under the name the client sent."""

from __future__ import annotations

import anthropic
import openai
from anthropic.types import Message

from apps.policies.models import ModelAlias
from apps.providers.models import Model
from tests.contract.shapes import assert_anthropic, assert_openai

ALIAS = "claude-sonnet-5"
HI = [{"role": "user", "content": "hi"}]


def test_aliases_are_models_and_answer_under_their_name(refusals):
    issued = refusals["keys"]["ok"]
    ModelAlias.objects.create(
        organization=issued.key.project.team.organization,
        alias=ALIAS,
        model=Model.objects.get(name="alpha"),
    )
    refusals["gateway"].snapshots.reload()
    url = refusals["gateway"].url
    client = openai.OpenAI(base_url=url + "/v1", api_key=issued.secret, max_retries=0)

    listed = client.models.with_raw_response.list().http_response.json()
    assert ALIAS in [m["id"] for m in listed["data"]]
    assert_openai("ListModelsResponse", listed)
    retrieved = client.models.with_raw_response.retrieve(ALIAS).http_response.json()
    assert retrieved["id"] == ALIAS
    assert_openai("Model", retrieved)

    chat = client.chat.completions.with_raw_response.create(model=ALIAS, messages=HI)
    assert chat.http_response.json()["model"] == ALIAS
    assert_openai("CreateChatCompletionResponse", chat.http_response.json())

    claude = anthropic.Anthropic(base_url=url, api_key=issued.secret, max_retries=0)
    message = claude.messages.with_raw_response.create(model=ALIAS, max_tokens=16, messages=HI)
    assert message.http_response.json()["model"] == ALIAS
    assert_anthropic(Message, message.http_response.json(), published="Message")
