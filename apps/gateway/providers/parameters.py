"""Forward or refuse: which OpenAI chat-completions fields a translating provider carries.

A gateway must never silently drop or change what the client asked for. Each translating
kind (anthropic, gemini, bedrock) declares one table, ``PARAMETERS`` in its
``translate.py``: every top-level field of a chat-completions body it accepts, and for
which values. :func:`check_parameters` reads it before anything is translated:

  * a field that is absent or ``null`` asks for the default: always fine;
  * a field in the table is accepted when its rule accepts the value — any value for what
    the translation carries (:data:`ANY`), only the default for what the provider cannot
    do (``n: 1``, ``logprobs: false``, penalties ``0``...: the answer is the same);
  * anything else — a value the rule does not take, a field the table names as
    :data:`NEVER`, or a field it does not name at all (a newer OpenAI field, a vendor
    extension) — is a 400 ``unsupported_parameter`` whose ``param`` is the field and whose
    message names the provider kind. Nothing is sent upstream.

The OpenAI-wire kinds (openai, openai_compatible, azure) forward the body as is: the
upstream validates it against its own schema, so they have no table.

The refusal is per attempt (raised from the adapter's ``request`` hook, before any I/O):
the route stage then moves on to the model's next deployment, whose kind may carry the
field (see ``apps.gateway.stages.route``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apps.gateway.errors import GatewayError, bad_request

UNSUPPORTED_PARAMETER = "unsupported_parameter"


@dataclass(frozen=True, slots=True)
class Rule:
    """What values of one field a kind accepts; ``takes`` says it in the refusal."""

    accepts: Callable[[Any], bool]
    takes: str = ""


#: Carried by the translation (or honoured by the gateway itself), whatever the value.
ANY = Rule(lambda _value: True)
#: Named only so each table is complete and readable: the kind cannot carry it.
NEVER = Rule(lambda _value: False)


def only(*values: Any, takes: str = "") -> Rule:
    """Accepted for these values only (the default, or the ones the provider has)."""

    def accepts(value: Any) -> bool:
        # Same type too: ``True == 1`` must not pass for ``n``, nor ``0`` for ``false``.
        return any(type(value) is type(v) and value == v for v in values)

    shown = ", ".join(repr(v) for v in values)
    return Rule(accepts, takes or f"only {shown}")


#: Defaults shared by the tables: the value that asks for what the provider does anyway.
ONE = only(1, takes="only 1, the default")
FALSE = only(False, takes="only false, the default")
TRUE = only(True, takes="only true, the default")
ZERO = Rule(lambda v: v == 0 and not isinstance(v, bool), "only 0, the default")
EMPTY = Rule(lambda v: v == {} or v == [], "only an empty value")
TEXT_ONLY = Rule(lambda v: v == ["text"], 'only ["text"], the default')


def response_format_types(*types: str) -> Rule:
    """``response_format`` whose ``type`` is one of ``types``."""
    return Rule(
        lambda v: isinstance(v, dict) and v.get("type") in types,
        "type " + " or ".join(repr(t) for t in types),
    )


#: ``tools`` made of function tools (OpenAI's ``custom`` tools have no equivalent).
FUNCTION_TOOLS = Rule(
    lambda v: (
        isinstance(v, list)
        and all(isinstance(t, dict) and t.get("type", "function") == "function" for t in v)
    ),
    "function tools only",
)

#: ``tool_choice`` as a mode or one function (``allowed_tools`` and ``custom`` choices
#: have no equivalent).
FUNCTION_TOOL_CHOICE = Rule(
    lambda v: (
        v in ("none", "auto", "required")
        or (isinstance(v, dict) and v.get("type", "function") == "function")
    ),
    "'none', 'auto', 'required' or a function",
)

#: The fields every translating kind treats alike.
COMMON: Mapping[str, Rule] = {
    "model": ANY,  # the deployment's upstream model replaces it
    "messages": ANY,
    "stream": ANY,
    # Honoured by the gateway itself: the usage chunk is the gateway's (include_usage);
    # the gateway's chunks carry no obfuscation field to turn off.
    "stream_options": ANY,
    # The end user: the gateway's own limits and audit read it (and the anthropic kind
    # forwards it as metadata.user_id).
    "user": ANY,
    "max_tokens": ANY,
    "max_completion_tokens": ANY,
    "temperature": ANY,
    "top_p": ANY,
    "stop": ANY,
    "tools": FUNCTION_TOOLS,
    "tool_choice": FUNCTION_TOOL_CHOICE,
    "response_format": response_format_types("text"),  # each kind adds what it has
    # No provider here takes several choices, token log probabilities, biases, predicted
    # outputs, audio, OpenAI-side storage or GPT-5 verbosity: only the defaults pass.
    "n": ONE,
    "logprobs": FALSE,
    "top_logprobs": ZERO,
    "logit_bias": EMPTY,
    "presence_penalty": ZERO,
    "frequency_penalty": ZERO,
    "modalities": TEXT_ONLY,
    "audio": NEVER,
    "prediction": NEVER,
    "web_search_options": NEVER,
    "store": FALSE,
    "metadata": EMPTY,
    "verbosity": only("medium", takes="only 'medium', the default"),
    "service_tier": only("auto", "default"),
    "seed": NEVER,
    "reasoning_effort": NEVER,
    "parallel_tool_calls": TRUE,
    "safety_identifier": NEVER,
    "prompt_cache_key": NEVER,  # each kind says (a cache hint, never part of the answer)
    "prompt_cache_retention": NEVER,
    "functions": NEVER,  # the deprecated function-calling fields: use tools
    "function_call": NEVER,
    "moderation": NEVER,
}


def unsupported(kind: str, param: str, takes: str = "") -> GatewayError:
    """The 400 naming the field (and the provider kind) that cannot be honoured."""
    detail = f" ({takes})" if takes else ""
    return bad_request(
        f"'{param}' is not supported by {kind} deployments{detail}; it is refused rather "
        "than dropped.",
        code=UNSUPPORTED_PARAMETER,
        param=param,
    )


def check_parameters(body: Mapping[str, Any], table: Mapping[str, Rule], kind: str) -> None:
    """Raise the 400 for the first field (in sorted order) ``table`` does not accept."""
    for name in sorted(body):
        value = body[name]
        if value is None:
            continue
        rule = table.get(name, NEVER)
        if not rule.accepts(value):
            raise unsupported(kind, name, rule.takes)
