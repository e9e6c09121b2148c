"""AWS Bedrock Converse as a provider (SigV4 or API key; Titan embeddings)."""
