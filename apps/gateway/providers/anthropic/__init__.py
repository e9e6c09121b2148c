"""Anthropic Messages API as a provider (OpenAI chat-completions in, OpenAI answers out)."""
