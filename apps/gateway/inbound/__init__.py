"""Inbound formats: client wire formats other than OpenAI chat-completions, translated to
it at the door and back on the way out (Anthropic Messages today; the Responses API next).
"""
