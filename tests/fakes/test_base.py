"""The scaffolding every fake shares (fakes.base): small helpers, each on its own."""

from __future__ import annotations

import argparse
import threading
import time

import orjson
import pytest

from fakes.base import (
    Cli,
    FakeBehavior,
    FakeServer,
    check_typed,
    json_response,
    once,
    plan_answer,
    retry_after,
    sse,
    typed_body,
)


def test_once_builds_a_single_time_even_when_threads_race():
    calls = []

    @once
    def build() -> object:
        calls.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(build())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


@pytest.mark.parametrize(
    ("tool", "max_tokens", "expected"),
    [
        ("get_weather", 2, ("get_weather", 8, "tool_use")),  # a call ignores the limit
        (None, 3, (None, 3, "max_tokens")),
        (None, 8, (None, 8, "end_turn")),  # not smaller: the full answer
        (None, None, (None, 8, "end_turn")),
        (None, "3", (None, 8, "end_turn")),  # not an int: no limit
    ],
)
def test_plan_answer(tool, max_tokens, expected):
    plan = plan_answer(tool, max_tokens, FakeBehavior(), ("tool_use", "max_tokens", "end_turn"))
    assert (plan.tool, plan.output_tokens, plan.stop_reason) == expected


def test_sse_frames_named_and_unnamed_events():
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse(b"[DONE]") == b"data: [DONE]\n\n"
    assert sse({"type": "ping"}, event="ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert sse({}, end=b"\r\n\r\n") == b"data: {}\r\n\r\n"


def test_json_response_and_the_429_retry_hint():
    response = json_response({"error": "x"}, 429, retry_after(429, "retry-after"))
    assert response.status == 429 and orjson.loads(response.body) == {"error": "x"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["retry-after"] == "1"
    assert retry_after(500) is None
    assert "Retry-After" not in json_response(b"{}", 500, retry_after(500)).headers


def test_check_typed_reports_the_path_of_a_lazy_iterable_item():
    from openai.types.chat import completion_create_params as chat

    typed = typed_body(chat.CompletionCreateParamsNonStreaming)
    assert "messages" in typed.keys and "max_tokens" in typed.keys and "bogus" not in typed.keys
    good = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert check_typed(typed.adapter, good) is None
    bad = {"model": "m", "messages": [{"role": "user", "content": 5}]}
    problem = check_typed(typed.adapter, bad)
    assert problem is not None and problem.startswith("Invalid request body: messages[0]")


class _Echo(FakeServer):
    label = "Echo"
    default_port = 9999
    api_key_help = "echo key"


def test_cli_takes_the_port_key_help_and_label_from_the_server_class():
    cli = Cli(_Echo, "fakes.echo", "An echo.")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--no-validate", "--latency-ms", "5"])
    assert args.port == 9999 and "echo key" in parser.format_help()
    behavior = cli.behavior(vars(args))
    assert behavior.validate is False and behavior.latency_ms == 5


def test_a_server_without_validators_starts_and_refuses_unimplemented_dispatch():
    import httpx

    with _Echo() as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(server.url + "/x", timeout=5).status_code == 500
        assert server.active_requests == 0
