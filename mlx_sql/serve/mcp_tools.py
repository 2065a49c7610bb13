"""`mlx-sql mcp`: the page's three actions as Model Context Protocol tools over stdio, for desktop assistants.

The same `Asker` as `ask` and the web page: the assistant gets the local model's SQL and the rows from the
read-only sandbox; nothing leaves the machine but what the assistant itself is sent. Stdout carries the
protocol only, so nothing here prints. Imported only by `mlx-sql mcp` (the `serve` extra brings `mcp`).

The SDK runs each call on a worker thread of its own, so calls an assistant sends together take turns on the
one model (a lock), and `ask` reports each stage as MCP progress: a voted answer takes tens of seconds on a
laptop's CPU, and a client that asked for progress sees it move instead of timing out in silence.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import anyio.from_thread
from mcp.server.mcpserver import Context

TOOL_ROWS = 200  # rows an assistant gets back; the count is always the full one


def _reply(answer: Any) -> dict[str, Any]:
    out = answer.to_json()
    out["rows"] = [[v if isinstance(v, (int, float, str)) or v is None else str(v) for v in row]
                   for row in answer.rows[:TOOL_ROWS]]
    out["shown"] = len(out["rows"])
    return out


def build_server(asker: Any) -> Any:
    from mcp.server.mcpserver import MCPServer

    turn = threading.Lock()  # one model, one call at a time
    server = MCPServer("mlx-sql", instructions=f"Ask the SQLite database '{asker.db_id}' questions through a local "
                                               "text-to-SQL model, run read-only SQL on it, or read its schema.")

    @server.tool()
    def ask(question: str, ctx: Context) -> dict[str, Any]:
        """Ask the database a question in plain words: the local model's SQL, run read-only, and its rows; with
        result voting, `agreement` [n, k]: n of the k candidate answers returned these rows (few: check the SQL)."""
        stage = itertools.count(1)

        def say(text: str) -> None:
            anyio.from_thread.run(ctx.report_progress, next(stage), None, text)

        with turn:
            return _reply(asker.ask(question, say=say))

    @server.tool()
    def run_sql(sql: str) -> dict[str, Any]:
        """Run one read-only SQLite query (no writes, ATTACH, pragmas or extensions; a timeout; a row cap)."""
        with turn:
            return _reply(asker.run_sql(sql))

    @server.tool()
    def schema() -> dict[str, Any]:
        """The database's tables, columns, keys and a few rows of each table."""
        with turn:
            return asker.describe()

    return server
