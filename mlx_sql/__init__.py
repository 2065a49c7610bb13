"""mlx-sql: finetune small open models for text-to-SQL with MLX, evaluate on Spider, export to Ollama."""

__version__ = "0.1.0"
