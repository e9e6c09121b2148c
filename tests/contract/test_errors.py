"""Every refusal the gateway makes, in the shape of the door it was asked through: OpenAI's
``ErrorResponse`` (spec) on the OpenAI paths, Anthropic's ``ErrorResponse`` (SDK type and
published spec) on ``/v1/messages`` and ``/v1/messages/count_tokens``; 429s carry
``Retry-After``. Sent raw (httpx) because several are requests no SDK would send (bad
JSON, unknown paths, wrong methods); the SDKs' handling of them is tests/gateway's."""

from __future__ import annotations

import httpx
import pytest

from tests.contract.conftest import MAX_BODY_BYTES
from tests.contract.shapes import assert_anthropic_error, assert_openai

NEVER_ISSUED = "sk-odock-thisKeyWasNeverIssued000000000000"
HI = [{"role": "user", "content": "hi"}]
CHAT = {"model": "alpha", "messages": HI}
MESSAGES = {"model": "alpha", "max_tokens": 16, "messages": HI}
COUNT = {"model": "alpha", "messages": HI}
BIG = [{"role": "user", "content": "x" * MAX_BODY_BYTES}]
#: AWS's documented example key: the ``guarded`` key's input guardrail blocks it.
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = [{"role": "user", "content": f"my key is {AWS_KEY}"}]

# (id, method, path, key, body, status, OpenAI code). ``key``: a key of the ``refusals``
# fixture, a literal secret, or None (no credential). "limited" is sent twice.
OPENAI_CASES = [
    ("bad-json", "POST", "/v1/chat/completions", "ok", b"{not json", 400, "invalid_json"),
    (
        "bad-type",
        "POST",
        "/v1/chat/completions",
        "ok",
        {**CHAT, "messages": "hi"},
        400,
        "invalid_type",
    ),
    (
        "bad-embeddings",
        "POST",
        "/v1/embeddings",
        "ok",
        {"model": "alpha"},
        400,
        "missing_required_parameter",
    ),
    ("no-key", "POST", "/v1/chat/completions", None, CHAT, 401, "missing_api_key"),
    ("unknown-key", "POST", "/v1/chat/completions", NEVER_ISSUED, CHAT, 401, "invalid_api_key"),
    ("not-allowed", "POST", "/v1/chat/completions", "narrow", CHAT, 403, "model_not_allowed"),
    (
        "unknown-model",
        "POST",
        "/v1/chat/completions",
        "ok",
        {**CHAT, "model": "nope"},
        404,
        "model_not_found",
    ),
    ("unknown-model-object", "GET", "/v1/models/nope", "ok", None, 404, "model_not_found"),
    ("unknown-endpoint", "GET", "/v1/nope", "ok", None, 404, "unknown_endpoint"),
    ("wrong-method", "GET", "/v1/chat/completions", "ok", None, 405, "method_not_allowed"),
    (
        "too-large",
        "POST",
        "/v1/chat/completions",
        "ok",
        {**CHAT, "messages": BIG},
        413,
        "request_too_large",
    ),
    ("rate-limited", "POST", "/v1/chat/completions", "limited", CHAT, 429, "rate_limit_exceeded"),
    ("over-budget", "POST", "/v1/chat/completions", "broke", CHAT, 429, "budget_exceeded"),
    (
        "guardrail",
        "POST",
        "/v1/chat/completions",
        "guarded",
        {**CHAT, "messages": SECRET},
        400,
        "guardrail_blocked",
    ),
]

# (id, method, path, key, body, status, Anthropic error type).
ANTHROPIC_CASES = [
    ("bad-json", "POST", "/v1/messages", "ok", b"{not json", 400, "invalid_request_error"),
    ("no-max-tokens", "POST", "/v1/messages", "ok", COUNT, 400, "invalid_request_error"),
    ("no-key", "POST", "/v1/messages", None, MESSAGES, 401, "authentication_error"),
    ("unknown-key", "POST", "/v1/messages", NEVER_ISSUED, MESSAGES, 401, "authentication_error"),
    ("not-allowed", "POST", "/v1/messages", "narrow", MESSAGES, 403, "permission_error"),
    (
        "unknown-model",
        "POST",
        "/v1/messages",
        "ok",
        {**MESSAGES, "model": "nope"},
        404,
        "not_found_error",
    ),
    ("unknown-endpoint", "POST", "/v1/messages/nope", "ok", MESSAGES, 404, "not_found_error"),
    ("wrong-method", "GET", "/v1/messages", "ok", None, 405, "invalid_request_error"),
    (
        "too-large",
        "POST",
        "/v1/messages",
        "ok",
        {**MESSAGES, "messages": BIG},
        413,
        "request_too_large",
    ),
    ("rate-limited", "POST", "/v1/messages", "limited", MESSAGES, 429, "rate_limit_error"),
    ("over-budget", "POST", "/v1/messages", "broke", MESSAGES, 429, "rate_limit_error"),
    (
        "guardrail",
        "POST",
        "/v1/messages",
        "guarded",
        {**MESSAGES, "messages": SECRET},
        400,
        "invalid_request_error",
    ),
    (
        "count-bad",
        "POST",
        "/v1/messages/count_tokens",
        "ok",
        {"model": "alpha"},
        400,
        "invalid_request_error",
    ),
    (
        "count-unknown-key",
        "POST",
        "/v1/messages/count_tokens",
        NEVER_ISSUED,
        COUNT,
        401,
        "authentication_error",
    ),
    (
        "count-not-allowed",
        "POST",
        "/v1/messages/count_tokens",
        "narrow",
        COUNT,
        403,
        "permission_error",
    ),
    (
        "count-unknown-model",
        "POST",
        "/v1/messages/count_tokens",
        "ok",
        {**COUNT, "model": "nope"},
        404,
        "not_found_error",
    ),
    (
        "count-too-large",
        "POST",
        "/v1/messages/count_tokens",
        "ok",
        {**COUNT, "messages": BIG},
        413,
        "request_too_large",
    ),
]


def send_refusal(refusals: dict, method: str, path: str, key: str | None, body, *, anthropic: bool):
    secret = refusals.get(key, key) if key else None
    headers = {}
    if secret:
        headers = {"x-api-key": secret} if anthropic else {"Authorization": f"Bearer {secret}"}
    if anthropic:
        headers["anthropic-version"] = "2023-06-01"
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    if isinstance(body, bytes):
        headers["content-type"] = "application/json"
    url = refusals["gateway"].url + path
    sends = 2 if key == "limited" else 1  # the first uses up the minute's one request
    for _ in range(sends):
        response = httpx.request(method, url, headers=headers, timeout=30, **kwargs)
    return response


def check_refusal(response: httpx.Response, status: int, secret_sent: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    if status == 429:
        assert int(response.headers["retry-after"]) > 0
    if status == 405:
        assert response.headers["allow"] == "POST"
    if secret_sent:
        assert secret_sent not in response.text
    assert AWS_KEY not in response.text


@pytest.mark.parametrize(
    ("method", "path", "key", "body", "status", "code"),
    [case[1:] for case in OPENAI_CASES],
    ids=[case[0] for case in OPENAI_CASES],
)
def test_openai_refusals_are_openai_error_responses(
    refusals, method, path, key, body, status, code
):
    response = send_refusal(refusals, method, path, key, body, anthropic=False)
    check_refusal(response, status, refusals.get(key, key) if key else None)
    assert_openai("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("method", "path", "key", "body", "status", "error_type"),
    [case[1:] for case in ANTHROPIC_CASES],
    ids=[case[0] for case in ANTHROPIC_CASES],
)
def test_messages_refusals_are_anthropic_error_responses(
    refusals, method, path, key, body, status, error_type
):
    response = send_refusal(refusals, method, path, key, body, anthropic=True)
    check_refusal(response, status, refusals.get(key, key) if key else None)
    assert_anthropic_error(response.json())
    assert response.json()["error"]["type"] == error_type
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert response.headers["request-id"] == response.headers["x-request-id"]  # the SDK's


def test_an_upstream_that_never_answers_is_a_504_in_each_doors_shape(refusals):
    from apps.providers.models import Model

    Model.objects.filter(name="alpha").update(attempt_timeout_seconds=0.2)
    refusals["gateway"].snapshots.reload()
    refusals["upstream"].behavior.hang = True
    for path, body, anthropic in (
        ("/v1/chat/completions", CHAT, False),
        ("/v1/messages", MESSAGES, True),
    ):
        response = send_refusal(refusals, "POST", path, "ok", body, anthropic=anthropic)
        check_refusal(response, 504, refusals["ok"])
        if anthropic:
            assert_anthropic_error(response.json())
            assert response.json()["error"]["type"] == "timeout_error"
        else:
            assert_openai("ErrorResponse", response.json())
            assert response.json()["error"]["code"] == "upstream_timeout"
