"""The MCP conformance suite's fixture server ("everything"), built with the official mcp SDK.

``scripts/mcp_conformance.sh`` runs the official suite (npm ``@modelcontextprotocol/conformance``)
against Odock's ``/mcp`` fronting this server, and with ``--direct`` against this server alone
(the baseline: every scenario passes here, so a failure through the gateway is the gateway's).
It implements every server-scenario fixture of the suite: the ``test_*`` tools, resources and
prompts, ``resources/subscribe``, ``completion/complete`` and ``logging/setLevel``. Being a
module rather than a heredoc, tests can also run it in a thread::

    ServerThread(mcp_everything_server.app()).start()

or standalone: ``python -m fakes.mcp_everything_server --port 8931 [--host 127.0.0.1]``
(Streamable HTTP at ``/mcp``).

The SDK's ``MCPServer`` has no hooks for ``logging/setLevel`` and ``resources/(un)subscribe``;
those handlers are registered on its low-level server, which also derives the declared
capabilities (``logging``, ``resources.subscribe``, ``completions``) from them.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import warnings
from typing import Any, get_args

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    AudioContent,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    LoggingLevel,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from starlette.applications import Starlette

__all__ = ["app", "build_server", "main"]

# Logging, sampling and resources/subscribe are deprecated in the 2026-07-28 protocol, but
# the suite tests them (2025-era sessions): silence the SDK's warnings for calls from here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=re.escape(__name__) + "$")

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt ").decode()
LEVELS: tuple[str, ...] = get_args(LoggingLevel)  # severity-ascending
COMPLETIONS = ("paris", "park", "party")
STEP = 0.05  # the suite's "~50 ms" between log / progress notifications

ELICITATION_SCHEMA = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}
SEP1034_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {
            "type": "string",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "default": True},
    },
}


def _titled(noun: str) -> list[dict[str, str]]:
    """SEP-1330 titled enum members: value1 "First <noun>", value2, value3."""
    ordinals = ("First", "Second", "Third")
    return [{"const": f"value{i}", "title": f"{o} {noun}"} for i, o in enumerate(ordinals, 1)]


SEP1330_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": _titled("Option")},
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {"type": "array", "items": {"anyOf": _titled("Choice")}},
    },
}


def _session_id(request: Any) -> str | None:
    """The ``Mcp-Session-Id`` of a request: per-session state is keyed by it."""
    headers = getattr(request, "headers", None)
    return headers.get("mcp-session-id") if headers else None


def _embedded(uri: str = "test://embedded-resource", text: str | None = None) -> EmbeddedResource:
    text = text or "This is an embedded resource content."
    return EmbeddedResource(
        type="resource",
        resource=TextResourceContents(uri=uri, mime_type="text/plain", text=text),
    )


def build_server() -> MCPServer:
    """A fresh fixture server (its state: per-session log levels and subscriptions)."""
    server = MCPServer("odock-conformance-upstream", log_level="WARNING")
    log_levels: dict[str | None, str] = {}
    subscriptions: dict[str | None, set[str]] = {}

    async def log(ctx: Context, level: LoggingLevel, message: str) -> None:
        """A ``notifications/message``, unless below the session's ``logging/setLevel``."""
        threshold = log_levels.get(_session_id(ctx.request_context.request), LEVELS[0])
        if LEVELS.index(level) >= LEVELS.index(threshold):
            await ctx.session.send_log_message(level, message, related_request_id=ctx.request_id)

    # --- tools --------------------------------------------------------------------------
    @server.tool()
    def test_simple_text() -> str:
        """Returns simple text content."""
        return "This is a simple text response for testing."

    @server.tool()
    def test_image_content() -> list:
        """Returns image content."""
        return [ImageContent(type="image", data=PNG, mime_type="image/png")]

    @server.tool()
    def test_audio_content() -> list:
        """Returns audio content."""
        return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool()
    def test_embedded_resource() -> list:
        """Returns an embedded resource."""
        return [_embedded()]

    @server.tool()
    def test_multiple_content_types() -> list:
        """Returns text, image and resource content."""
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG, mime_type="image/png"),
            _embedded(),
        ]

    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log notifications, ~50 ms apart."""
        await log(ctx, "info", "Tool execution started")
        await anyio.sleep(STEP)
        await log(ctx, "info", "Tool processing data")
        await anyio.sleep(STEP)
        await log(ctx, "info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100, ~50 ms apart."""
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100)
            if step < 100:
                await anyio.sleep(STEP)
        return "Tool with progress executed successfully"

    @server.tool()
    def test_error_handling() -> str:
        """Always fails."""
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's LLM (sampling/createMessage) and returns its answer."""
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            raise ToolError("The client does not support sampling")
        result = await ctx.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        text = result.content.text if isinstance(result.content, TextContent) else result.content
        return f"LLM response: {text}"

    async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> tuple[str, str]:
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            raise ToolError("The client does not support elicitation")
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return result.action, json.dumps(result.content)

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user (elicitation/create) for a username and an email."""
        action, content = await elicit(ctx, message, ELICITATION_SCHEMA)
        return f"User response: action={action}, content={content}"

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicitation with a default for every primitive type (SEP-1034)."""
        action, content = await elicit(ctx, "Please review your information", SEP1034_SCHEMA)
        return f"Elicitation completed: action={action}, content={content}"

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicitation with the five enum schema variants (SEP-1330)."""
        action, content = await elicit(ctx, "Please select options", SEP1330_SCHEMA)
        return f"Elicitation completed: action={action}, content={content}"

    # --- resources ----------------------------------------------------------------------
    @server.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """Static text resource."""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """Static binary resource."""
        return base64.b64decode(PNG)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template(id: str) -> str:
        """Resource template with one parameter."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", mime_type="text/plain")
    def watched() -> str:
        """A resource that can be subscribed to."""
        return "Watched resource content"

    # --- prompts ------------------------------------------------------------------------
    @server.prompt()
    def test_simple_prompt() -> str:
        """A simple prompt without arguments."""
        return "This is a simple prompt for testing."

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        """A prompt with required arguments."""
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list:
        """A prompt with an embedded resource."""
        return [
            UserMessage(content=_embedded(resourceUri, "Embedded resource content for testing.")),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list:
        """A prompt with image content."""
        return [
            UserMessage(content=ImageContent(type="image", data=PNG, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]

    # --- completion, logging/setLevel, resources/(un)subscribe --------------------------
    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion:
        if ref.type == "ref/prompt" and ref.name == "test_prompt_with_arguments":
            values = [v for v in COMPLETIONS if v.startswith(argument.value)]
            return Completion(values=values, total=len(values), has_more=False)
        return Completion(values=[], total=0, has_more=False)

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        log_levels[_session_id(ctx.request)] = params.level
        return EmptyResult()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.setdefault(_session_id(ctx.request), set()).add(params.uri)
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.get(_session_id(ctx.request), set()).discard(params.uri)
        return EmptyResult()

    lowlevel = server._lowlevel_server  # no public accessor in mcp 2.3.0
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    return server


def app(host: str = "127.0.0.1") -> Starlette:
    """The ASGI app of a fresh server: Streamable HTTP at ``/mcp``. On a loopback ``host``
    the SDK turns on its DNS-rebinding protection (Host / Origin must be loopback)."""
    return build_server().streamable_http_app(host=host)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    uvicorn.run(app(args.host), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
