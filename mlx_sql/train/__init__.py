"""The training stage: our own MLX loop over schema-injected JSONL."""
