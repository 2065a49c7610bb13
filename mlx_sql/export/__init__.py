"""The shipping stage: fuse adapters, write GGUF, hand it to Ollama."""
