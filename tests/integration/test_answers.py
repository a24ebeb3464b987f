"""Every request gets an answer in the one error shape: an exception nobody expected is a JSON
500 with a reference (never Starlette's plain text), a database that cannot be reached is a
JSON 503 with Retry-After, also when a streamed download fails before its first byte.

The app under test is llmqueue's own (`create_app`), served by uvicorn, with two routes the
test adds: one with a bug, one streaming from a database that is not there (a real refused
connection to a port nobody listens on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.responses import StreamingResponse
from sqlalchemy import create_engine, text

from api.downloads import attachment, started_stream
from api.main import create_app
from emulator.server import free_port


def _rows_from_a_database_that_is_away() -> Iterator[bytes]:
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    with engine.connect() as conn:  # refused: OperationalError before the first row
        yield from (str(row).encode() for row in conn.execute(text("SELECT 1")))


@pytest.fixture(scope="module")
def served(database: str) -> Iterator[str]:
    app = create_app()

    @app.get("/_test/bug")
    def bug() -> None:
        raise RuntimeError("a bug in a route")

    @app.get("/_test/download")
    def download() -> StreamingResponse:
        return started_stream(_rows_from_a_database_that_is_away(), media_type="text/plain")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(10)


def test_an_unexpected_exception_is_a_json_500_with_a_reference(served: str) -> None:
    r = httpx.get(f"{served}/_test/bug")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == "api_error" and error["code"] == "internal_error"
    assert "reference" in error["message"] and "a bug in a route" not in error["message"]


def test_a_download_whose_database_is_away_is_a_json_503(served: str) -> None:
    r = httpx.get(f"{served}/_test/download")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["error"]["code"] == "database_unavailable"


def test_unknown_routes_and_methods_answer_in_the_error_shape(served: str) -> None:
    r = httpx.get(f"{served}/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.delete(f"{served}/v1/jobs")
    assert r.status_code == 405 and "error" in r.json() and r.headers["allow"]


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("report.csv", "report.csv"),
        ('my "best" results.jsonl', "my _best_ results.jsonl"),
        ("résumé des données.csv", "r_sum_ des donn_es.csv"),
        ("evil\r\nSet-Cookie: x=1.csv", "evil__Set-Cookie: x=1.csv"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("日本語.jsonl", "___.jsonl"),
    ],
)
def test_any_file_name_makes_a_safe_content_disposition(name: str, fallback: str) -> None:
    header = attachment(name)
    header.encode("latin-1")  # a header value must be ISO-8859-1: it is even ASCII
    assert "\r" not in header and "\n" not in header
    assert header.startswith(f"attachment; filename=\"{fallback}\"; filename*=UTF-8''")
    from urllib.parse import unquote

    assert unquote(header.split("filename*=UTF-8''", 1)[1]) == name
