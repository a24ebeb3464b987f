"""Downloads anyone can open safely: a batch's CSV never holds a cell a spreadsheet would run as
a formula, and a file whose name has quotes, newlines or non-ASCII letters downloads with
that exact name."""

from __future__ import annotations

import csv
import io
import json
import time
from urllib.parse import unquote

from tests.integration.conftest import Stack

FORMULAS = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "\rCR", '=HYPERLINK("http://x")']


def test_csv_cells_cannot_run_as_formulas(stack: Stack) -> None:
    docs = [json.dumps({"id": doc_id, "text": f"Otters number {n}."}) for n, doc_id in enumerate(FORMULAS)]
    docs.append(json.dumps({"id": "plain", "text": "Rivers."}))
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": "gpt-4o-mini"},
        files={"jsonl": ("docs.jsonl", "\n".join(docs).encode(), "application/x-ndjson")},
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while stack.client.get(f"/v1/document_batches/{batch_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    r = stack.client.get(f"/v1/document_batches/{batch_id}/results", params={"format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-disposition"].startswith(f'attachment; filename="{batch_id}.csv"')
    rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    assert [row["id"] for row in rows] == ["'" + f for f in FORMULAS] + ["plain"]
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    assert rows[0]["status"] == "succeeded" and rows[0]["cost_usd"][0].isdigit()
    # The JSONL results keep the ids as they are.
    r = stack.client.get(f"/v1/document_batches/{batch_id}/results")
    assert [json.loads(line)["id"] for line in r.text.splitlines()] == [*FORMULAS, "plain"]


def test_a_file_with_any_name_downloads_under_that_name(stack: Stack) -> None:
    for name in ['my "best"\nbatch.jsonl', "données été 日本.jsonl", "x" * 300 + ".jsonl"]:
        r = stack.client.post(
            "/v1/files", data={"purpose": "batch"}, files={"file": (name, b"{}\n", "application/jsonl")}
        )
        assert r.status_code == 200, r.text
        stored = r.json()["filename"]
        assert len(stored) <= 255 and stored.endswith(".jsonl")
        r = stack.client.get(f"/v1/files/{r.json()['id']}/content")
        assert r.status_code == 200 and r.content == b"{}\n"
        disposition = r.headers["content-disposition"]
        disposition.encode("ascii")
        assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == stored
