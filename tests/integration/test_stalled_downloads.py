"""A result download that its client stops reading holds no database connection.

An embed-mode batch's results (megabytes of vectors) are downloaded over a raw socket with a
small receive buffer that is then left unread, so the API's stream blocks part-way; after
longer than any short transaction, Postgres shows no connection of the test database idle in a
transaction, and the download, read to its end afterwards, is whole and in order. A document
batch's rows (generate mode) are read the same way, a page at a time; its reader is stopped
after its first row and the same check made.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from jobstore.result_pages import PAGE_ROWS, document_rows
from tests.integration.conftest import Stack
from tests.integration.test_document_batches import submit, wait
from tests.integration.test_embed_batches import document, submit_embed
from tests.integration.test_embed_batches import wait as wait_embed
from tests.integration.test_many_streams import held_connections

HELD_AFTER_S = 2.5  # held_connections() sees transactions begun over 2 s ago


def stalled_get(stack: Stack, path: str) -> tuple[socket.socket, bytes]:
    """A GET sent on a socket whose receive buffer is small, of which only the first bytes are read."""
    url = urlsplit(stack.api_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((url.hostname or "127.0.0.1", url.port or 80))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {stack.key}\r\n"
        "Connection: close\r\n\r\n"
    )
    sock.sendall(request.encode())
    first = sock.recv(1024)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    return sock, first


def read_rest(sock: socket.socket) -> bytes:
    chunks = []
    sock.settimeout(60)
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def chunked_body(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 response sent with chunked transfer encoding."""
    out, rest = [], raw.split(b"\r\n\r\n", 1)[1]
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


def test_a_stalled_embedding_download_holds_no_connection(stack: Stack) -> None:
    docs = [(f"doc{i}.txt", document(100 + i, 500)) for i in range(40)]
    r = submit_embed(stack, files=docs, model="text-embedding-3-small", chunk_tokens=40, dimensions=1536)
    assert r.status_code == 202, r.text
    accepted = r.json()
    chunks = accepted["options"]["chunks"]
    batch = wait_embed(stack, accepted["id"])
    assert batch["status"] == "completed", batch

    sock, first = stalled_get(stack, f"/v1/document_batches/{accepted['id']}/results")
    time.sleep(HELD_AFTER_S)
    assert held_connections() == []
    raw = first + read_rest(sock)
    assert len(raw) > 5_000_000  # more than the kernel's send buffer holds (tcp_wmem: at most 4 MB)
    assert b"transfer-encoding: chunked" in raw.split(b"\r\n\r\n", 1)[0].lower()
    rows = [json.loads(line) for line in chunked_body(raw).splitlines() if line.strip()]
    assert len(rows) == chunks
    assert all(len(row["embedding"]) == 1536 for row in rows)
    order = [(row["document"], row["chunk"]) for row in rows]
    assert order == sorted(order, key=lambda d: (int(d[0][3:-4]), d[1]))


def test_document_rows_hold_no_connection_between_pages(stack: Stack) -> None:
    n = PAGE_ROWS + 50  # two pages
    jsonl = "".join(json.dumps({"id": f"d{i}", "text": f"document number {i}"}) + "\n" for i in range(n))
    batch = submit(stack, jsonl=jsonl, model="gpt-4o-mini")
    assert wait(stack, batch["id"])["status"] == "completed"

    reader = document_rows(batch["id"])
    first: dict[str, Any] = next(reader)
    assert first["id"] == "d0" and first["status"] == "succeeded"
    time.sleep(HELD_AFTER_S)  # the reader paused between rows, as a stalled download's is
    assert held_connections() == []
    rest = list(reader)
    assert [row["id"] for row in [first, *rest]] == [f"d{i}" for i in range(n)]
    assert [row["line"] for row in [first, *rest]] == list(range(1, n + 1))
