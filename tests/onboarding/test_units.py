"""The flows' small helpers, each on its own (no database, no HTTP)."""

from __future__ import annotations

import pytest
from django import forms
from django.core.exceptions import ValidationError

from apps.gateway.snapshot import DeploymentEntry
from apps.onboarding.forms import options_parse_lines
from apps.onboarding.probe import SECRET_SHOWN_AS, _answer_text, _without_secret
from apps.onboarding.services import _refiled


def test_options_lines_become_a_dict():
    text = "api_version = 2024-10-21\n\n  region=eu-west-1  \nempty="
    assert options_parse_lines(text) == {
        "api_version": "2024-10-21",
        "region": "eu-west-1",
        "empty": "",
    }
    assert options_parse_lines("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("region", "Line 1: write name=value"),
        ("a=1\n=2", "Line 2: write name=value"),
        ("a=1\na=2", "Line 2: a is given twice."),
    ],
)
def test_bad_option_lines_name_the_line(text, message):
    with pytest.raises(forms.ValidationError) as info:
        options_parse_lines(text)
    assert message in info.value.messages[0]


def test_model_errors_are_refiled_under_the_form_fields():
    exc = ValidationError({"name": ["taken"], "api_base": ["bad"], "__all__": ["looser"]})
    refiled = _refiled(exc, {"name": "provider_name", "api_base": "api_base"}, "kind")
    assert refiled.message_dict == {
        "provider_name": ["taken"],
        "api_base": ["bad"],
        "kind": ["looser"],
    }
    plain = _refiled(ValidationError("looser than the org"), {}, "monthly_budget_usd")
    assert plain.message_dict == {"monthly_budget_usd": ["looser than the org"]}


def test_the_provider_key_is_masked_in_what_is_shown():
    entry = DeploymentEntry(id=1, provider="p", kind="openai", api_base="x", api_key="sk-abcdef")
    shown = _without_secret("Incorrect API key provided: sk-abcdef.", entry)
    assert shown == f"Incorrect API key provided: {SECRET_SHOWN_AS}."
    assert len(_without_secret("x" * 2000, entry)) == 500  # bounded
    empty = DeploymentEntry(id=1, provider="p", kind="openai", api_base="x", api_key="")
    assert _without_secret("kept as is", empty) == "kept as is"


def test_the_answer_text_is_read_from_an_openai_answer():
    body = b'{"choices": [{"message": {"role": "assistant", "content": "ready"}}]}'
    assert _answer_text(body) == "ready"
    refusal = b'{"choices": [{"message": {"content": null, "refusal": "no"}}]}'
    assert _answer_text(refusal) == "no"
    with pytest.raises(KeyError):
        _answer_text(b'{"error": {}}')
