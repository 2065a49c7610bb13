"""`mlx-sql mcp`: the page's three actions as Model Context Protocol tools over stdio, for desktop assistants.

The same `Asker` as `ask` and the web page: the assistant gets the local model's SQL and the rows from the
read-only sandbox; nothing leaves the machine but what the assistant itself is sent. Stdout carries the
protocol only, so nothing here prints.
"""

from __future__ import annotations

from typing import Any

TOOL_ROWS = 200  # rows an assistant gets back; the count is always the full one


def _reply(answer: Any) -> dict[str, Any]:
    out = answer.to_json()
    out["rows"] = [[v if isinstance(v, (int, float, str)) or v is None else str(v) for v in row]
                   for row in answer.rows[:TOOL_ROWS]]
    out["shown"] = len(out["rows"])
    return out


def build_server(asker: Any) -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("mlx-sql", instructions=f"Ask the SQLite database '{asker.db_id}' questions through a local "
                                               "text-to-SQL model, run read-only SQL on it, or read its schema.")

    @server.tool()
    def ask(question: str) -> dict[str, Any]:
        """Ask the database a question in plain words: the local model's SQL, run read-only, and its rows; with
        result voting, `agreement` [n, k]: n of the k candidate answers returned these rows (few: check the SQL)."""
        return _reply(asker.ask(question))

    @server.tool()
    def run_sql(sql: str) -> dict[str, Any]:
        """Run one read-only SQLite query (no writes, ATTACH, pragmas or extensions; a timeout; a row cap)."""
        return _reply(asker.run_sql(sql))

    @server.tool()
    def schema() -> dict[str, Any]:
        """The database's tables, columns, keys and a few rows of each table."""
        return asker.describe()

    return server
