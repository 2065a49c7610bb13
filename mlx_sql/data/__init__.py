"""Data stage: benchmarks, schemas, examples, JSONL."""
