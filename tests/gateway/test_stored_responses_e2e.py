"""End to end with ``POST /v1/responses`` (its own module; this file runs once it is
served): create → retrieve → continue → input_items → delete, through the database store,
with the official openai SDK over real HTTP against the fake upstream."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.factories import key_create, model_create, project_create, provider_create

pytest.importorskip("apps.gateway.inbound.openai_responses")  # POST /v1/responses


def test_create_retrieve_continue_list_delete(gateway, fake_upstream):
    model_create("gpt-4o-mini", provider_create(fake_upstream.url))
    mine, other = key_create(), key_create()
    sibling = key_create(project_create(mine.key.project.team))
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=mine.secret, max_retries=0)

    first = client.responses.create(model="gpt-4o-mini", input="first question")
    assert client.responses.retrieve(first.id).output_text == first.output_text

    second = client.responses.create(
        model="gpt-4o-mini", input="second question", previous_response_id=first.id
    )
    # The upstream got the whole conversation, kept by the gateway.
    sent = orjson.dumps(fake_upstream.requests[-1]["json"]).decode()
    assert "first question" in sent and first.output_text[:20] in sent
    assert "second question" in sent
    items = list(client.responses.input_items.list(second.id, order="asc"))
    assert items[0].content[0].text == "first question"
    assert items[-1].content[0].text == "second question"
    assert len(items) == 3  # first's input, first's output, second's input

    # Another organisation's key, or another project's, can neither read nor continue it.
    for intruder in (other, sibling):
        theirs = openai.OpenAI(base_url=gateway.url + "/v1", api_key=intruder.secret, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.create(model="gpt-4o-mini", input="x", previous_response_id=first.id)

    # Deleting the first turn: the second can no longer be continued (never shortened).
    client.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-4o-mini", input="third", previous_response_id=second.id)
    assert info.value.body["code"] == "previous_response_not_found"
