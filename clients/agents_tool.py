"""openai-agents (the `clients` extra) with default settings: one function tool round trip.

The SDK is used as shipped: the default model provider (the Responses API), the default
``AsyncOpenAI`` client configured only by the environment (``OPENAI_BASE_URL`` = the
gateway's /v1, ``OPENAI_API_KEY`` = an Odock key). Tracing is off
(``OPENAI_AGENTS_DISABLE_TRACING=1``, set by scripts/real_clients.sh) so the key is never
exported to the SDK's trace endpoint. Model: ``ODOCK_MODEL``.

PASS when the agent called the tool once and produced a non-empty final answer after it.
Prints one ``PASS agents-tool: ...`` / ``FAIL agents-tool: ...`` line; exits 0 / 1.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agents import Agent, Runner, function_tool

CALLS: list[str] = []
# The marker makes the scripted fake call the tool (fakes/scripted.py); "weather" does too.
PROMPT = 'What is the weather in Paris? [odock-fake-call get_weather {"city": "Paris"}]'


@function_tool
def get_weather(city: str) -> str:
    """Return the weather for a city."""
    CALLS.append(city)
    return f"It is sunny in {city}."


async def main() -> int:
    agent = Agent(
        name="odock-check",
        instructions="Use the get_weather tool to answer weather questions.",
        model=os.environ.get("ODOCK_MODEL", "gpt-4o-mini"),
        tools=[get_weather],
    )
    try:
        result = await Runner.run(agent, PROMPT, max_turns=4)
    except Exception as exc:  # the reason is the point: print it and fail
        print(f"FAIL agents-tool: {type(exc).__name__}: {str(exc)[:400]}")
        return 1
    answer = str(result.final_output or "")
    if len(CALLS) != 1:
        print(f"FAIL agents-tool: the tool ran {len(CALLS)} times, expected once")
        return 1
    if not answer.strip():
        print("FAIL agents-tool: empty final answer after the tool round trip")
        return 1
    print(f"PASS agents-tool: tool get_weather({CALLS[0]!r}) ran, answer {answer[:60]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
