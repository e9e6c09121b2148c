"""Fake upstreams (OpenAI, Azure OpenAI, Anthropic, Gemini, Bedrock, an MCP server).

Each speaks its provider's real wire format and checks what it receives against that
provider's own SDK types, so the gateway's translations are tested against something that
fails loudly. Not a Django app and never imported by it: tests, ``scripts/run_demo.py`` and
``bench/bench.py`` start them, in a thread or as ``python -m fakes.<name>_server``.
"""
