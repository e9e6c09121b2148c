"""Google Gemini API as a provider (chat, streams, embeddings)."""
