"""The OpenAI-compatible HTTP endpoint in front of the split controller (`splitrl serve`)."""
