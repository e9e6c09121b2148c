"""The benchmark's time-to-first-token client (``bench/bench.py``), against the fake
OpenAI upstream and on hand-made byte streams. No database is needed."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.openai_server import FakeOpenAIServer


def _load_bench():
    """``bench/bench.py`` by its path: putting ``bench/`` on ``sys.path`` would let its
    ``mcp.py`` shadow the MCP SDK for every test collected after this one."""
    path = Path(__file__).resolve().parents[2] / "bench" / "bench.py"
    spec = importlib.util.spec_from_file_location("odock_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["odock_bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"


def chunked(*events: bytes) -> bytes:
    """A 200 SSE answer in chunked transfer coding, one chunk per event."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events)
    return head + b"\r\n" + body + b"0\r\n\r\n"


def feed_bytewise(raw: bytes, mode: str = "stream") -> bench._Framing:
    """Feed one byte per read, the read's number as its arrival time."""
    framing = bench._Framing(mode, 0.0)
    for number in range(len(raw)):
        framing.feed(raw[number : number + 1], float(number))
    return framing


def test_first_token_is_the_first_byte_of_the_first_event_with_text() -> None:
    raw = chunked(ROLE, TOKEN, DONE)
    framing = feed_bytewise(raw)
    assert framing.done and framing.status == 200
    # the role event has empty content: the token event's first byte is the first token
    assert framing.first_token_at == raw.index(TOKEN)


def test_one_read_with_everything_and_an_event_split_over_chunks() -> None:
    half = len(TOKEN) // 2
    raw = chunked(ROLE, TOKEN[:half], TOKEN[half:], DONE)
    framing = bench._Framing("stream", 0.0)
    framing.feed(raw[:-3], 7.0)
    assert not framing.done  # the last chunk's CRLF has not arrived
    assert framing.first_token_at == 7.0
    framing.feed(raw[-3:], 8.0)
    assert framing.done


def test_a_stream_without_text_has_no_first_token() -> None:
    framing = feed_bytewise(chunked(ROLE, DONE))
    assert framing.done and framing.first_token_at is None


def test_an_error_answer_with_content_length_keeps_its_body() -> None:
    body = b'{"error":{"message":"no"}}'
    raw = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    framing = feed_bytewise(raw)
    assert framing.done and framing.status == 401 and not framing.close
    assert bytes(framing.error_body) == body
    assert framing.first_token_at is None


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key="sk-fake-ttft") as server:
        yield server


@pytest.mark.parametrize("mode", ["stream", "responses-stream"])
def test_against_the_fake_every_stream_has_a_first_token(fake: FakeOpenAIServer, mode: str) -> None:
    target = bench.Target("fake", fake.url, "sk-fake-ttft", "gpt-4o-mini")
    result = bench.run_ttft(target, mode, 3, 30, max_requests=12)
    assert (result.requests, result.errors) == (12, 0), result.first_error
    assert 0 < result.ttft_ms["50"] <= result.end_ms["50"]
    assert result.ttft_ms["99"] <= result.end_ms["99"]


def test_refusals_are_counted_as_errors(fake: FakeOpenAIServer) -> None:
    target = bench.Target("fake", fake.url, "sk-wrong-key", "gpt-4o-mini")
    result = bench.run_ttft(target, "stream", 2, 30, max_requests=4)
    assert (result.requests, result.errors) == (0, 4)
    assert result.first_error is not None and result.first_error.startswith("401")


def test_a_stream_cut_before_its_text_is_an_error(fake: FakeOpenAIServer) -> None:
    fake.behavior.disconnect_after_chunks = 0  # the role event, then the server hangs up
    target = bench.Target("fake", fake.url, "sk-fake-ttft", "gpt-4o-mini")
    result = bench.run_ttft(target, "stream", 1, 30, max_requests=3)
    assert (result.requests, result.errors) == (0, 3)


def test_chat_mode_is_refused() -> None:
    target = bench.Target("fake", "http://127.0.0.1:9/v1", "k", "m")
    with pytest.raises(ValueError, match="stream mode"):
        bench.run_ttft(target, "chat", 1, 1)
