"""The local web page and the MCP tools over `eval.ask.Asker` (`mlx-sql serve`, `mlx-sql mcp`)."""
