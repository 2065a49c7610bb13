"""`mlx-sql serve`: a real server on 127.0.0.1 (started as a user starts it), a loopback model server, a real
SQLite file — the JSON API, its guards, and the page in a real headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, loopback_server, voting_model

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ANSWERS = {"how many customers are there?": "SELECT count(*) FROM customers",
           "customers per city": "SELECT city, count(*) AS customers FROM customers GROUP BY city ORDER BY city"}


def _model(body):
    """An Ollama /api/chat stand-in: SQL for the questions it knows, prose for the rest."""
    question = body["messages"][0]["content"].split("### Question ###")[-1].strip().lower()
    return {"model": body["model"], "message": {"role": "assistant",
                                                "content": ANSWERS.get(question, "I am not sure what you mean.")}}


@pytest.fixture
def shop(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE cities (city TEXT PRIMARY KEY, country TEXT);"
                       "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, "
                       "city TEXT REFERENCES cities(city));"
                       "INSERT INTO cities VALUES ('Paris', 'France'), ('Oslo', 'Norway');"
                       "INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bo', 'Oslo'), (3, 'Cy', 'Paris');")
    conn.commit()
    conn.close()
    return path


class Server:
    """`mlx-sql serve` in a subprocess on a free port of 127.0.0.1, with its own cache folder."""

    def __init__(self, tmp_path: Path, db: Path, model_url: str, *extra: str):
        recipe = tmp_path / "r.toml"
        recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{ROOT / "benchmarks" / "minispider"}"\n'
                          f'[eval]\nbackend = "ollama"\n[ollama]\nbase_url = "{model_url}"\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLX_SQL_CACHE": str(tmp_path / "cache")}
        self.proc = subprocess.Popen([sys.executable, "-m", "mlx_sql", "serve", "--recipe", str(recipe), "--db", str(db),
                                      "--model", "m", "--port", "0", *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        line = self.proc.stdout.readline()
        assert "serving shop at http://127.0.0.1:" in line, line + self.proc.stderr.read()
        self.url = line.split(" at ")[1].split()[0].rstrip("/")

    def request(self, path: str, body=None, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json",
                                                                          **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, res.headers.get("content-type"), res.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("content-type"), exc.read()

    def json(self, path: str, body=None, **kw):
        status, _, data = self.request(path, body, **kw)
        return status, json.loads(data)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def model_server():
    server = loopback_server(_model)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_api_answers_runs_edits_and_never_writes(shop, tmp_path, model_server):
    before = shop.read_bytes()
    server = Server(tmp_path, shop, model_server)
    try:
        status, answer = server.json("/api/ask", {"question": "How many customers are there?"})
        assert status == 200 and answer["sql"] == "SELECT count(*) FROM customers"
        assert answer["rows"] == [[3]] and answer["row_count"] == 1 and answer["error"] is None
        assert answer["seconds"] >= 0
        status, edited = server.json("/api/sql", {"sql": "SELECT name FROM customers WHERE city = 'Paris' ORDER BY name"})
        assert status == 200 and edited["columns"] == ["name"] and edited["rows"] == [["Ada"], ["Cy"]]
        status, bad = server.json("/api/sql", {"sql": "SELECT nope FROM customers"})
        assert status == 200 and bad["error"] == "SQLite: no such column: nope" and bad["rows"] == []
        for write in ("DELETE FROM customers", "DROP TABLE customers", "ATTACH 'x.db' AS x",
                      "PRAGMA journal_mode = WAL", "INSERT INTO cities VALUES ('Rome', 'Italy')"):
            status, refused = server.json("/api/sql", {"sql": write})
            assert status == 200 and refused["error"], write
        status, prose = server.json("/api/ask", {"question": "What is the meaning of this?"})
        assert prose["error"] == "the model's answer is not a SQLite query"
        status, kind, data = server.request("/api/csv", {"sql": ANSWERS["customers per city"]})
        assert status == 200 and kind.startswith("text/csv")
        assert list(csv.reader(io.StringIO(data.decode()))) == [["city", "customers"], ["Oslo", "1"], ["Paris", "2"]]
        many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT x FROM c"
        status, cut = server.json("/api/sql", {"sql": many})  # over the 10,000-row cap: cut there, not refused
        assert status == 200 and cut["error"] is None and cut["truncated"] is True
        assert (cut["row_count"], cut["shown"], cut["rows"][-1]) == (10_000, 1_000, [1_000])
        status, _, data = server.request("/api/csv", {"sql": many})
        assert status == 200 and list(csv.reader(io.StringIO(data.decode())))[-1] == ["10000"]
        status, schema = server.json("/api/schema")
        assert [t["name"] for t in schema["tables"]] == ["cities", "customers"]
        assert schema["foreign_keys"] == ["customers.city -> cities.city"]
        assert schema["tables"][1]["sample"]["rows"][0] == [1, "Ada", "Paris"]
        status, history = server.json("/api/history")
        assert [h["question"] for h in history["history"]] == ["What is the meaning of this?",
                                                                "How many customers are there?"]
    finally:
        server.stop()
    again = Server(tmp_path, shop, model_server)  # the history outlives the server, outside the database
    try:
        assert len(again.json("/api/history")[1]["history"]) == 2
        moved = shop.with_name("gone.sqlite")
        shop.rename(moved)
        status, gone = again.json("/api/sql", {"sql": "SELECT 1 FROM customers"})
        assert status == 200 and "database file not found" in gone["error"]
        moved.rename(shop)
    finally:
        again.stop()
    assert shop.read_bytes() == before
    assert not list(tmp_path.glob("shop.sqlite-*"))  # no journal or WAL beside it


def test_requests_from_elsewhere_and_bad_bodies_are_refused(shop, tmp_path, model_server):
    server = Server(tmp_path, shop, model_server)
    try:
        port = server.url.rsplit(":", 1)[1]
        status, out = server.json("/api/schema", headers={"Host": f"evil.example:{port}"})
        assert status == 403 and "is not this server" in out["error"]
        status, out = server.json("/api/sql", {"sql": "SELECT 1"}, headers={"Origin": "http://evil.example"})
        assert status == 403 and "origin" in out["error"]
        status, out = server.json("/api/sql", {"sql": "SELECT 1"}, headers={"Origin": f"http://localhost:{port}"})
        assert status == 200 and out["rows"] == [[1]]
        status, _, _ = server.request("/api/sql", raw=b"x" * (70 * 1024))
        assert status == 413
        status, out = server.json("/api/sql", raw=b"not json")
        assert status == 400 and out["error"] == "the body is not JSON"
        status, out = server.json("/api/ask", {"question": "   "})
        assert status == 400 and 'non-empty "question"' in out["error"]
        status, _, _ = server.request("/api/nothing")
        assert status == 404
    finally:
        server.stop()


def test_concurrent_requests_are_answered_in_turn(shop, tmp_path, model_server):
    """A bounded loopback load: 24 requests from 8 threads, all answered, the database unchanged."""
    before = shop.read_bytes()
    server = Server(tmp_path, shop, model_server)
    results = []
    try:
        def worker(i: int) -> None:
            for j in range(3):
                if (i + j) % 2:
                    results.append(server.json("/api/ask", {"question": "How many customers are there?"}))
                else:
                    results.append(server.json("/api/sql", {"sql": f"SELECT {i * 10 + j}"}))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        server.stop()
    assert len(results) == 24 and all(status == 200 and body["error"] is None for status, body in results)
    assert shop.read_bytes() == before


def test_listening_beyond_this_machine_warns(shop, tmp_path, model_server):
    server = Server(tmp_path, shop, model_server)
    server.stop()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLX_SQL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "mlx_sql", "serve", "--recipe", str(tmp_path / "r.toml"), "--db",
                           str(tmp_path / "missing.sqlite"), "--host", "0.0.0.0"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and "warning: listening on 0.0.0.0" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("missing.sqlite: database not found")


def _chromium():
    """(Playwright's sync API, a Chromium binary), or skip the test."""
    # Debian's /usr/bin/chromium is a shell wrapper that Playwright's pipe does not survive: the binary itself
    chromium = next((c for c in ("/usr/lib/chromium/chromium",) if Path(c).is_file()), None) or \
        shutil.which("chromium") or shutil.which("chromium-browser")
    playwright = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("no Chromium (make setup installs Debian's where it may)")
    return playwright, chromium


def _launch(p, chromium):
    return p.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


def test_the_page_in_a_real_browser(shop, tmp_path, model_server, monkeypatch):
    playwright, chromium = _chromium()
    server = Server(tmp_path, shop, model_server)
    monkeypatch.delenv("LD_PRELOAD", raising=False)  # OpenBLAS preloaded into Playwright's node driver breaks it
    try:
        with playwright.sync_playwright() as p:
            browser = _launch(p, chromium)
            page = browser.new_page(accept_downloads=True, viewport={"width": 1200, "height": 800})
            page.goto(server.url + "/")
            page.wait_for_selector("#schema summary")
            assert page.inner_text("#db") == "shop"
            page.fill("#question", "customers per city")
            page.click("#ask")
            page.wait_for_selector("#rows td")
            assert page.input_value("#sql") == ANSWERS["customers per city"]
            assert page.inner_text("#status").startswith("2 rows")
            assert [c.inner_text() for c in page.query_selector_all("#rows td")] == ["Oslo", "1", "Paris", "2"]
            assert page.query_selector("#chart svg rect") is not None  # a label and a number: a bar chart
            screenshot = Path(os.environ.get("MLX_SQL_SCREENSHOT", tmp_path / "page.png"))
            page.screenshot(path=str(screenshot))
            page.fill("#sql", "SELECT name FROM customers WHERE city = 'Oslo'")
            page.click("#run")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('1 row ·')")
            assert [c.inner_text() for c in page.query_selector_all("#rows td")] == ["Bo"]
            with page.expect_download() as download:
                page.click("#csv")
            assert Path(download.value.path()).read_bytes() == b"name\r\nBo\r\n"
            page.fill("#sql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
                              "SELECT x FROM c")
            page.click("#run")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('more than')")
            assert page.inner_text("#status").startswith(
                "more than 10000 rows (first 1000 here; CSV has the first 10000)")
            page.fill("#sql", "SELECT nope FROM customers")
            page.click("#run")
            page.wait_for_function("document.querySelector('#error').textContent.length > 0")
            assert page.inner_text("#error") == "SQLite: no such column: nope"
            assert page.query_selector_all("#rows td") == []
            page.reload()
            page.wait_for_selector("#history li")
            assert page.inner_text("#history li") == "customers per city"
            browser.close()
    finally:
        server.stop()
    assert screenshot.stat().st_size > 10_000


def test_a_voted_answer_says_how_many_candidates_agreed(shop, tmp_path, monkeypatch):
    """With result voting the API and the page show how sure the vote was (2 of 4 candidates returned the rows),
    and /api/ask/stream tells the page each stage while it waits."""
    import time

    playwright, chromium = _chromium()

    def slow_samples(body):  # the page has a moment to show the stage it waits on
        if body["options"]["temperature"] > 0:
            time.sleep(0.4)
        return voting_model(body)

    model = loopback_server(slow_samples)
    server = Server(tmp_path, shop, f"http://127.0.0.1:{model.server_port}", "--set", "eval.samples=4")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    try:
        status, answer = server.json("/api/ask", {"question": "How many customers are there?"})
        assert status == 200 and answer["sql"] == "SELECT count(*) FROM customers" and answer["rows"] == [[3]]
        assert answer["agreement"] == [2, 4] and [c["group"] for c in answer["candidates"]] == [0, 1, 1, None]
        status, kind, data = server.request("/api/ask/stream", {"question": "How many customers are there?"})
        assert status == 200 and kind.startswith("text/event-stream")
        events = [(block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
                  for block in data.decode().strip().split("\n\n")]
        assert [e for e in events if e[0] == "progress"] == [
            ("progress", {"text": "reading the schema"}), ("progress", {"text": "writing the SQL"}),
            ("progress", {"text": "sampling 3 more answers to vote"})]
        (last_kind, streamed), = events[3:]
        assert last_kind == "answer" and {k: v for k, v in streamed.items() if k != "seconds"} == \
            {k: v for k, v in answer.items() if k != "seconds"}
        status, refused = server.json("/api/ask/stream", {"question": " "})  # refused before any stream
        assert status == 400 and 'non-empty "question"' in refused["error"]
        with playwright.sync_playwright() as p:
            browser = _launch(p, chromium)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(server.url + "/")
            page.fill("#question", "How many customers are there?")
            page.click("#ask")  # the stream's stages reach the page while the answer is still being voted on
            page.wait_for_function("document.querySelector('#status').textContent === "
                                   "'sampling 3 more answers to vote…'", timeout=10_000)
            page.wait_for_selector("#rows td")
            assert page.inner_text("#candidates-summary").startswith(
                "4 candidates tried; this answer's result was returned by 2 of them")
            assert len(page.query_selector_all("#candidates li")) == 4
            assert len(page.query_selector_all("#candidates li.win")) == 2
            browser.close()
    finally:
        server.stop()
        model.shutdown()


def test_mcp_tools_through_the_packages_own_client(shop, tmp_path, model_server):
    pytest.importorskip("mcp")
    import anyio
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    Server(tmp_path, shop, model_server).stop()  # writes r.toml for this model server
    before = shop.read_bytes()
    params = StdioServerParameters(command=sys.executable, args=["-m", "mlx_sql", "mcp", "--recipe",
                                                                 str(tmp_path / "r.toml"), "--db", str(shop),
                                                                 "--model", "m"],
                                   env={"PYTHONPATH": str(ROOT), "MLX_SQL_CACHE": str(tmp_path / "cache"),
                                        **({"LD_PRELOAD": os.environ["LD_PRELOAD"]} if "LD_PRELOAD" in os.environ
                                           else {})})

    async def session():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            tools = sorted(t.name for t in (await client.list_tools()).tools)

            async def progress(done, total, message):
                heard.append((done, message))

            asked = await client.call_tool("ask", {"question": "How many customers are there?"},
                                           progress_callback=progress)
            together = []  # calls sent at once take turns on the one model, each answered

            async def one(question):
                together.append((await client.call_tool("ask", {"question": question})).structured_content)

            async with anyio.create_task_group() as group:
                for question in ("How many customers are there?", "customers per city") * 2:
                    group.start_soon(one, question)
            ran = await client.call_tool("run_sql", {"sql": "DELETE FROM customers"})
            schema = await client.call_tool("schema", {})
            return tools, asked.structured_content, together, ran.structured_content, schema.structured_content

    heard = []
    tools, asked, together, ran, schema = anyio.run(session)
    assert tools == ["ask", "run_sql", "schema"]
    assert asked["sql"] == "SELECT count(*) FROM customers" and asked["rows"] == [[3]]
    assert heard == [(1, "reading the schema"), (2, "writing the SQL")]  # each stage as MCP progress
    assert sorted(a["sql"] for a in together) == sorted([ANSWERS["how many customers are there?"],
                                                         ANSWERS["customers per city"]] * 2)
    assert all(a["error"] is None for a in together)
    assert ran["error"] and ran["rows"] == []
    assert [t["name"] for t in schema["tables"]] == ["cities", "customers"]
    assert shop.read_bytes() == before
