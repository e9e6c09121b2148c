"""Azure OpenAI: the OpenAI wire at Azure's URLs, with Azure's key header."""
