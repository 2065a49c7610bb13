"""`mlx-sql serve`: the `ask` of one database and one model as a local web page and a JSON API.

A thin layer over `eval.ask.Asker` — prompting, voting, retries and the sandbox are all its — built on
Starlette and served by uvicorn:

- `GET /` the page (one HTML file, no CDN: everything it needs is in it);
- `POST /api/ask {"question"}` the model's SQL and its rows; `POST /api/ask/stream` the same answer as
  server-sent events, each stage (`progress`) as it starts, then the `answer` (or an `error`): with voting on a
  CPU an answer takes seconds, and the page says what it is waiting for; `POST /api/sql {"sql"}` a person's
  SQL, run the same way; `POST /api/csv {"sql"}` the rows as a CSV download; `GET /api/schema`; `GET /api/history`.

Safe by default: bound to 127.0.0.1; a request whose Host is not this server's own name, or whose Origin is
another site, is refused (a page elsewhere cannot drive it: DNS rebinding, cross-site POST); bodies are
bounded; the model is used by one request at a time (others wait their turn); the database is only ever
opened read-only, and the history lives in the cache folder, never in it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.retry import quiet
from mlx_sql.serve.history import History

MAX_BODY = 64 * 1024
MAX_QUESTION = 2000
PAGE_ROWS = 1000  # rows sent to the page; the count is always the full one
PAGE = Path(__file__).with_name("page.html")


def allowed_hosts(host: str, port: int) -> set[str]:
    names = {host, "localhost", "127.0.0.1", "[::1]"} if host in ("127.0.0.1", "localhost", "::1") else {host}
    return {f"{name}:{port}" for name in names} | ({f"[{host}]:{port}"} if ":" in host else set())


def create_app(asker: Any, host: str = "127.0.0.1", port: int = 8000, history: History | None = None) -> Any:
    """The Starlette application serving `asker` (an `Asker`, or anything with its methods)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    lock = asyncio.Lock()  # one model, one request at a time: the rest wait in order
    hosts = allowed_hosts(host, port)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    class Guard:
        """Refuse requests not meant for this server before anything reads them."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            why = None
            if headers.get("host", "") not in hosts:
                why = f"host {headers.get('host', '(none)')!r} is not this server"
            elif origin is not None and origin != "null" and urlsplit(origin).netloc not in hosts:
                why = f"origin {origin!r} is not this server's page"
            elif origin == "null" and scope["method"] != "GET":
                why = "requests from pages without an origin are refused"
            elif int(headers.get("content-length") or 0) > MAX_BODY:
                await error(413, f"request body over {MAX_BODY} bytes")(scope, receive, send)
                return
            if why:
                await error(403, why)(scope, receive, send)
                return
            await self.app(scope, receive, send)

    async def body(request: Request, key: str, limit: int) -> str:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise MlxSqlError(f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            raise MlxSqlError("the body is not JSON") from None
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise MlxSqlError(f'expected a JSON object with a non-empty "{key}" string')
        if len(value) > limit:
            raise MlxSqlError(f'"{key}" is longer than {limit} characters')
        return value.strip()

    async def in_turn(fn: Any, *args: Any) -> Any:
        from starlette.concurrency import run_in_threadpool

        async with lock:
            return await run_in_threadpool(fn, *args)

    def answered(answer: Any, seconds: float) -> dict[str, Any]:
        out = answer.to_json()
        out["rows"] = [[_cell(v) for v in row] for row in answer.rows[:PAGE_ROWS]]
        out.update(seconds=round(seconds, 3), shown=min(len(answer.rows), PAGE_ROWS))
        return out

    async def guarded(handler: Any, request: Request) -> Response:
        try:
            return await handler(request)
        except MlxSqlError as exc:
            return error(400, str(exc))

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    async def asked(question: str, say: Any = quiet) -> dict[str, Any]:
        start = time.perf_counter()
        answer = await in_turn(asker.ask, question, True, say)
        out = answered(answer, time.perf_counter() - start)
        if history is not None:
            history.add({"question": question, "sql": answer.sql, "row_count": len(answer.rows), "error": answer.error,
                         "seconds": out["seconds"], "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        return out

    async def api_ask(request: Request) -> Response:
        return JSONResponse(await asked(await body(request, "question", MAX_QUESTION)))

    async def api_ask_stream(request: Request) -> Response:
        """The answer as server-sent events: `progress` {"text"} at each stage, then `answer` (what /api/ask
        returns) or `error` {"error"}. A bad request is refused before the stream starts."""
        question = await body(request, "question", MAX_QUESTION)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        say = lambda text: loop.call_soon_threadsafe(events.put_nowait, ("progress", {"text": text}))  # noqa: E731

        async def work() -> None:
            if lock.locked():
                say("waiting for the question before this one")
            try:  # the stream has begun: an error is its last event, not a status code
                await events.put(("answer", await asked(question, say)))
            except MlxSqlError as exc:
                await events.put(("error", {"error": str(exc)}))
            except Exception as exc:  # a fault of ours: the page hears of it, the server's log gets the traceback
                await events.put(("error", {"error": f"{type(exc).__name__}: {exc}"}))
                raise

        task = asyncio.create_task(work())

        async def stream() -> Any:
            kind = "progress"
            while kind == "progress":
                kind, data = await events.get()
                yield f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
            await task

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def api_sql(request: Request) -> Response:
        sql = await body(request, "sql", MAX_BODY)
        start = time.perf_counter()
        answer = await in_turn(asker.run_sql, sql)
        return JSONResponse(answered(answer, time.perf_counter() - start))

    async def api_csv(request: Request) -> Response:
        sql = await body(request, "sql", MAX_BODY)
        answer = await in_turn(asker.run_sql, sql)
        if not answer.ok:
            return error(400, answer.error)
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(answer.columns)
        writer.writerows([[_cell(v) for v in row] for row in answer.rows])
        return Response(text.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="rows.csv"'})

    async def api_schema(request: Request) -> Response:
        return JSONResponse(await in_turn(asker.describe))

    async def api_history(request: Request) -> Response:
        return JSONResponse({"history": history.read() if history is not None else []})

    def route(path: str, handler: Any, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await guarded(handler, request)
        return Route(path, endpoint, methods=methods)

    return Starlette(routes=[route("/", page, ["GET"]), route("/api/ask", api_ask, ["POST"]),
                             route("/api/ask/stream", api_ask_stream, ["POST"]),
                             route("/api/sql", api_sql, ["POST"]), route("/api/csv", api_csv, ["POST"]),
                             route("/api/schema", api_schema, ["GET"]), route("/api/history", api_history, ["GET"])],
                     middleware=[Middleware(Guard)])


def _cell(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and value != value:
        return None
    return value


def serve(asker: Any, host: str, port: int, history: History | None, on_ready: Any = None) -> None:
    """Run the server until Ctrl-C; `on_ready(url)` once it listens (port 0 picks a free one)."""
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the queue from now on, before uvicorn starts taking them
    except OSError as exc:
        raise MlxSqlError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    app = create_app(asker, host, port, history)
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=64, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/")
    server.run(sockets=[sock])
