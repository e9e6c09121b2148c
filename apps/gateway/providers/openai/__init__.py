"""OpenAI's wire, spoken as is: the ``openai`` and ``openai_compatible`` kinds (Azure reuses it)."""
