"""The tool every provider test calls, and the follow-up turn that answers its call."""

from __future__ import annotations

from typing import Any

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def tool_follow_up(
    messages: list[dict[str, Any]],
    call_id: str,
    name: str,
    arguments: str,
    result: str = "Sunny, 21 C",
) -> list[dict[str, Any]]:
    """The conversation so far, the assistant's tool call and the tool's answer to it."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]
