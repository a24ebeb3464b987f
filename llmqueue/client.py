"""A Python client for llmqueue's HTTP API (httpx), for applications: RAG pipelines, agents,
scripts, and the `llmqueue` CLI itself.

    from llmqueue.client import Client
    with Client() as lq:                                  # LLMQUEUE_API_URL, LLMQUEUE_API_KEY
        job = lq.run("Summarise: ...", strategy="cost")   # submit and wait
        for text in lq.stream("Tell me a story"):         # submit and stream
            print(text, end="")
        batch = lq.submit_documents(["a.txt", "b.txt"], prompt="Summarise: {document}")
        lq.wait_batch(batch["id"], on_progress=lambda b: print(b["counts"]))
        for row in lq.batch_results(batch["id"]): ...
        vectors = lq.embed(["a text", "another"], model="text-embedding-3-small")
        batch = lq.embed_documents(["a.txt", "b.txt"], model="embed-v4.0", chunk_tokens=256)
        for chunk in lq.batch_results(batch["id"]): ...     # {document, chunk, start, end, embedding}

Every API error raises a subclass of `LlmqueueError` carrying the API's message, param and
code; a job that ends failed raises `JobFailed` from `run`; waiting too long raises `Timeout`.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
ENDED_JOB = ("succeeded", "failed", "cancelled")
ENDED_BATCH = ("completed", "failed", "cancelled", "expired")
JsonDict = dict[str, Any]
SPOOL_BYTES = 8 << 20


class LlmqueueError(Exception):
    """An error answered by the API (its `{"error": {...}}` shape) or met on the way to it."""

    def __init__(
        self, message: str, *, status: int | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code


class MissingApiKey(LlmqueueError):
    """No key given and LLMQUEUE_API_KEY unset."""


class AuthenticationError(LlmqueueError):
    """401: the key is missing, malformed or revoked."""


class InvalidRequest(LlmqueueError):
    """400/422: the request is wrong; `param` says where."""


class PermissionDenied(LlmqueueError):
    """403: the route needs an admin key."""


class NotFound(LlmqueueError):
    """404: no such job, batch, file or model for this key."""


class Conflict(LlmqueueError):
    """409: an Idempotency-Key reused with a different request."""


class RateLimited(LlmqueueError):
    """429."""


class ServerError(LlmqueueError):
    """5xx, or the API could not be reached."""


class Timeout(LlmqueueError):
    """A wait ran past its timeout; the job or batch goes on."""


class JobFailed(LlmqueueError):
    """The job ended failed or cancelled; `job` is its final state."""

    def __init__(self, job: JsonDict) -> None:
        error = job.get("error") or {}
        super().__init__(
            f"job {job['id']} {job['status']}: {error.get('message', '')}".strip(), code=error.get("type")
        )
        self.job = job


ERRORS_BY_STATUS: dict[int, type[LlmqueueError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}


def raise_for_error(response: httpx.Response) -> None:
    """Raise the LlmqueueError subclass for an error response; nothing for a success."""
    if response.is_success:
        return
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {"message": response.text[:500]}
    cls = ERRORS_BY_STATUS.get(
        response.status_code, ServerError if response.status_code >= 500 else LlmqueueError
    )
    raise cls(
        str(error.get("message") or f"HTTP {response.status_code}"),
        status=response.status_code,
        param=error.get("param"),
        code=error.get("code"),
    )


def decode_vector(encoded: str) -> list[float]:
    """A base64 vector (little-endian float32s, OpenAI's `encoding_format=base64`) as floats."""
    values = array("f", base64.b64decode(encoded))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def as_messages(prompt: str | list[JsonDict]) -> list[JsonDict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def document_lines(documents: Iterable[str | Path | JsonDict]) -> Iterator[bytes]:
    """JSONL lines for a document batch: paths are read (their name is the id), dicts pass as is."""
    for doc in documents:
        if isinstance(doc, dict):
            record = doc
        else:
            path = Path(doc)
            record = {
                "id": path.name,
                "text": path.read_text(encoding="utf-8"),
                "metadata": {"path": str(path)},
            }
        yield json.dumps(record).encode() + b"\n"


class Client:
    """Synchronous client. `timeout` bounds each HTTP request; waits take their own timeout."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("LLMQUEUE_API_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("LLMQUEUE_API_KEY")
        if not key:
            raise MissingApiKey(
                "no API key: set LLMQUEUE_API_KEY (create one with 'llmqueue keys create')",
                param="LLMQUEUE_API_KEY",
                code="missing_api_key",
            )
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Timeout(f"{method} {path}: no answer from {self.base_url} in time") from exc
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach llmqueue at {self.base_url}: {exc}") from exc
        raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> JsonDict:
        body: JsonDict = self._request(method, path, **kwargs).json()
        return body

    # ------------------------------------------------------------ jobs

    def submit(
        self,
        prompt: str | list[JsonDict],
        *,
        model: str | None = None,
        strategy: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> JsonDict:
        """Enqueue a job; returns {id, status, url, created}. `options`: any JobCreate field."""
        body = {"messages": as_messages(prompt), "model": model, "strategy": strategy, **options}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(
            "POST", "/v1/jobs", json={k: v for k, v in body.items() if v is not None}, headers=headers
        )

    def job(self, job_id: str) -> JsonDict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def route_preview(
        self,
        prompt: str | list[JsonDict],
        *,
        model: str | None = None,
        strategy: str | None = None,
        **options: Any,
    ) -> JsonDict:
        """How `submit` with the same arguments would be routed now (nothing is enqueued):
        {strategy, chosen, candidates, excluded, waits_until}."""
        body = {"messages": as_messages(prompt), "model": model, "strategy": strategy, **options}
        return self._json("POST", "/v1/route/preview", json={k: v for k, v in body.items() if v is not None})

    def jobs(self, *, limit: int = 20, status: str | None = None) -> list[JsonDict]:
        params: JsonDict = {"limit": limit, **({"status": status} if status else {})}
        data: list[JsonDict] = self._json("GET", "/v1/jobs", params=params)["data"]
        return data

    def cancel(self, job_id: str) -> JsonDict:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, *, timeout: float = 300.0, poll_s: float = 0.25) -> JsonDict:
        """Poll until the job ends; returns it whatever its outcome."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ENDED_JOB:
                return job
            if time.monotonic() > deadline:
                raise Timeout(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll_s)

    def run(self, prompt: str | list[JsonDict], *, timeout: float = 300.0, **options: Any) -> JsonDict:
        """Submit and wait; returns the succeeded job, or raises JobFailed."""
        job = self.wait(self.submit(prompt, **options)["id"], timeout=timeout)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return job

    def stream(
        self, prompt: str | list[JsonDict], *, timeout: float = 300.0, **options: Any
    ) -> Iterator[str]:
        """Submit with streaming and yield text as it is generated (SSE from /v1/jobs/{id}/stream).
        If a provider call is retried after streaming, its text restarts: that raises nothing,
        but the yielded pieces then repeat; use `run` when only the final text matters."""
        job_id = self.submit(prompt, stream=True, **options)["id"]
        yield from self.stream_job(job_id, timeout=timeout)

    def stream_job(self, job_id: str, *, timeout: float = 300.0) -> Iterator[str]:
        event = ""
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/stream", timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line.split(":", 1)[1])
                        if event == "delta":
                            yield str(data.get("text", ""))
                        elif event == "done":
                            if data.get("status") != "succeeded":
                                raise JobFailed({"id": job_id, **data})
                            return
        except httpx.TimeoutException as exc:
            raise Timeout(f"stream of job {job_id} idle past {timeout:.0f} s") from exc

    # ------------------------------------------------------------ document batches

    def submit_documents(
        self,
        documents: Iterable[str | Path | JsonDict],
        *,
        prompt: str,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> JsonDict:
        """Start a document batch: paths (read as UTF-8 text) or {"id", "text", "metadata"} dicts.
        `options`: model, strategy, min_quality, max_cost_usd (the whole batch's budget),
        max_cost_per_document_usd, max_tokens, deadline_s, on_too_long (split|reject),
        webhook_url, delivery (auto|economy|online: economy mode, README). The documents go up as
        one JSONL stream."""
        form = {"prompt": prompt, **{k: str(v) for k, v in options.items() if v is not None}}
        return self._documents(form, documents, idempotency_key)

    def _documents(
        self, form: dict[str, str], documents: Iterable[str | Path | JsonDict], idempotency_key: str | None
    ) -> JsonDict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as payload:  # big batches spill to disk
            for line in document_lines(documents):
                payload.write(line)
            payload.seek(0)
            return self._json(
                "POST",
                "/v1/document_batches",
                data=form,
                files={"jsonl": ("documents.jsonl", payload, "application/x-ndjson")},
                headers=headers,
            )

    def batch(self, batch_id: str) -> JsonDict:
        return self._json("GET", f"/v1/document_batches/{batch_id}")

    def batches(self, *, limit: int = 20) -> list[JsonDict]:
        data: list[JsonDict] = self._json("GET", "/v1/document_batches", params={"limit": limit})["data"]
        return data

    def cancel_batch(self, batch_id: str) -> JsonDict:
        return self._json("POST", f"/v1/document_batches/{batch_id}/cancel")

    def wait_batch(
        self,
        batch_id: str,
        *,
        on_progress: Callable[[JsonDict], None] | None = None,
        timeout: float | None = None,
        poll_s: float = 1.0,
    ) -> JsonDict:
        """Poll until the batch ends, calling on_progress with each state; returns the last."""
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            batch = self.batch(batch_id)
            if on_progress is not None:
                on_progress(batch)
            if batch["status"] in ENDED_BATCH:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout(f"batch {batch_id} still {batch['status']} after {timeout:.0f} s")
            time.sleep(poll_s)

    def batch_results(self, batch_id: str) -> Iterator[JsonDict]:
        """Each document's result (an embed-mode batch: each chunk's), in input order, streamed."""
        yield from self._stream_lines(f"/v1/document_batches/{batch_id}/results")

    def _stream_lines(self, path: str, params: dict[str, str] | None = None) -> Iterator[JsonDict]:
        with self._http.stream("GET", path, params=params, timeout=None) as response:
            if not response.is_success:
                response.read()
                raise_for_error(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def batch_results_csv(self, batch_id: str) -> str:
        return self._request("GET", f"/v1/document_batches/{batch_id}/results", params={"format": "csv"}).text

    def document(self, batch_id: str, doc_id: str) -> JsonDict:
        return self._json("GET", f"/v1/document_batches/{batch_id}/documents/{doc_id}")

    # ------------------------------------------------------------ embeddings

    def embeddings(
        self,
        texts: str | list[str],
        *,
        model: str,
        dimensions: int | None = None,
        input_type: str | None = None,
        idempotency_key: str | None = None,
    ) -> JsonDict:
        """POST /v1/embeddings, waited for: OpenAI's answer (`data`, `usage`, and the `llmqueue`
        object with the jobs, calls and cost), each `embedding` decoded to floats."""
        body = {
            "model": model,
            "input": texts,
            "dimensions": dimensions,
            "input_type": input_type,
            "encoding_format": "base64",  # a quarter of the bytes of JSON floats
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        answer = self._json(
            "POST",
            "/v1/embeddings",
            json={k: v for k, v in body.items() if v is not None},
            headers=headers,
            timeout=None,  # the API answers once every call has; it gives up itself after 10 minutes
        )
        for datum in answer["data"]:
            datum["embedding"] = decode_vector(datum["embedding"])
        return answer

    def embed(
        self,
        texts: list[str],
        *,
        model: str,
        dimensions: int | None = None,
        input_type: str | None = None,
    ) -> list[list[float]]:
        """The vectors of `texts`, in order (as many provider calls as the model's limits need)."""
        answer = self.embeddings(texts, model=model, dimensions=dimensions, input_type=input_type)
        return [datum["embedding"] for datum in sorted(answer["data"], key=lambda d: d["index"])]

    def embed_documents(
        self,
        documents: Iterable[str | Path | JsonDict],
        *,
        model: str,
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> JsonDict:
        """Start a document batch in embed mode: each document chunked (`chunk_tokens`, overlapping
        by `overlap_tokens`), the chunks packed into embedding calls. `options`: dimensions,
        input_type, max_cost_usd, deadline_s, webhook_url. Read the chunks' vectors with
        `embedding_results` (GET .../results?format=npy: a NumPy matrix), each document's cost with
        `batch_documents`."""
        form = {
            "mode": "embed",
            "model": model,
            "chunk_tokens": chunk_tokens,
            "overlap_tokens": overlap_tokens,
            **options,
        }
        return self._documents(
            {k: str(v) for k, v in form.items() if v is not None}, documents, idempotency_key
        )

    def batch_documents(self, batch_id: str) -> list[JsonDict]:
        """An embed-mode batch's documents: chunks, status, input tokens and cost of each."""
        text = self._request("GET", f"/v1/document_batches/{batch_id}/documents").text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def embedding_results(
        self, batch_id: str, *, include_text: bool = False, include_vectors: bool = True
    ) -> Iterator[JsonDict]:
        """An embed-mode batch's chunks in input order, vectors decoded to floats."""
        params = {
            "include_text": str(include_text).lower(),
            "include_vectors": str(include_vectors).lower(),
            "encoding_format": "base64",
        }
        for row in self._stream_lines(f"/v1/document_batches/{batch_id}/results", params):
            if isinstance(row.get("embedding"), str):
                row["embedding"] = decode_vector(row["embedding"])
            yield row

    # ------------------------------------------------------------ spend

    def stats(self, since: str | None = None) -> JsonDict:
        """GET /v1/stats: tokens and spend by model, provider and day."""
        return self._json("GET", "/v1/stats", params={"since": since} if since else None)

    def spend(
        self,
        group_by: str | Iterable[str] = "model",
        *,
        since: str | None = None,
        until: str | None = None,
        keys: Iterable[str] | None = None,
    ) -> JsonDict:
        """GET /v1/spend: spend summed from every call, grouped by any of key, model, provider,
        day, tag. A member's own; an admin's every key (or `keys`)."""
        dims = [group_by] if isinstance(group_by, str) else list(group_by)
        params: list[tuple[str, str]] = [("group_by", d) for d in dims]
        params += [(name, value) for name, value in (("since", since), ("until", until)) if value]
        params += [("key", k) for k in keys or ()]
        return self._json("GET", "/v1/spend", params=params)

    # ------------------------------------------------------------ keys (admin keys only, but `own_key`)

    def own_key(self) -> JsonDict:
        """This key: its role, limits, budget and spend."""
        return self._json("GET", "/v1/keys/self")

    def keys(self, *, include_revoked: bool = True) -> list[JsonDict]:
        data: list[JsonDict] = self._json(
            "GET", "/v1/keys", params={"include_revoked": str(include_revoked).lower()}
        )["data"]
        return data

    def create_key(self, name: str, **fields: Any) -> JsonDict:
        """A new key; its `secret` is in this answer only. `fields`: role, budget
        ({limit_usd, period, soft_limit_usd}), rpm, tpm, alert_webhook_url."""
        return self._json("POST", "/v1/keys", json={"name": name, **fields})

    def revoke_key(self, key_id: str) -> JsonDict:
        return self._json("POST", f"/v1/keys/{key_id}/revoke")

    def set_key_budget(
        self,
        key_id: str,
        limit_usd: str | None,
        *,
        period: str = "lifetime",
        soft_limit_usd: str | None = None,
    ) -> JsonDict:
        """Set or (limit_usd None) remove a key's budget."""
        body = {"limit_usd": limit_usd, "period": period, "soft_limit_usd": soft_limit_usd}
        return self._json("PUT", f"/v1/keys/{key_id}/budget", json=body)
