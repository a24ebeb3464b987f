"""The lines of an OpenAI (and Azure OpenAI) batch: reading the input file, answering, writing results.

Input lines are `{"custom_id", "method": "POST", "url", "body"}`. `read_input` finds what
makes the real service fail a batch while validating it (`errors.data` entries with a `code`
and, for a line, its 1-based `line`): `empty_file`, `file_too_large`, `too_many_tasks`,
`invalid_json_line`, `missing_required_parameter`, `invalid_method`, `url_mismatch`,
`duplicate_custom_id`, `model_mismatch` (a batch names one model) and `model_not_found`
(only when `BatchSettings.models` lists the models the emulator knows).

Chat lines are answered through the online route's own parsing (`parse_openai`) and
`Emulator.answer`; embedding lines get a small deterministic unit vector (16 dimensions
unless the line asks for `dimensions`). A result line carries `response.status_code` and
`body`; a line never run carries `error` with `batch_expired` or `batch_cancelled` instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from emulator.batch_config import BatchSettings
from emulator.batch_engine import BatchLine, LineResult, LineRunner
from emulator.batch_store import new_id
from emulator.core import Emulator, count_tokens
from emulator.openai_format import completion_body, parse_openai

MAX_REPORTED_ERRORS = 100  # a file of bad lines reports its first errors, not one per line
EMBEDDING_DIMENSIONS = 16


def _error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def read_input(
    data: bytes, endpoint: str, settings: BatchSettings, max_lines: int, max_bytes: int, same_url: bool
) -> tuple[list[BatchLine], list[dict[str, Any]]]:
    """The file's lines, and why validation fails (empty when it passes).

    `same_url` compares each line's url with the batch endpoint exactly (OpenAI); otherwise
    a leading `/v1` is ignored on both sides, as Azure accepts either spelling.
    """
    if not data.strip():
        return [], [_error("empty_file", "The batch input file is empty.")]
    if len(data) > max_bytes:
        message = f"The batch input file is {len(data)} bytes, larger than the limit of {max_bytes} bytes."
        return [], [_error("file_too_large", message)]
    raw_lines = data.decode("utf-8", errors="replace").splitlines()
    if len(raw_lines) > max_lines:
        message = f"The batch input file has {len(raw_lines)} requests, more than the limit of {max_lines}."
        return [], [_error("too_many_tasks", message)]

    def norm(url: Any) -> Any:
        return url if same_url or not isinstance(url, str) else url.removeprefix("/v1")

    lines: list[BatchLine] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_lines, start=1):
        problem = _check_line(raw, number, norm(endpoint), norm, seen)
        if isinstance(problem, BatchLine):
            if lines and problem.model != lines[0].model:
                problem_error = _error(
                    "model_mismatch",
                    f"This line uses model '{problem.model}', but the batch's model is '{lines[0].model}'; "
                    "every request of a batch must use the same model.",
                    number,
                    "body.model",
                )
                errors.append(problem_error)
            elif settings.models is not None and problem.model not in settings.models:
                message = f"The model '{problem.model}' does not exist or you do not have access to it."
                errors.append(_error("model_not_found", message, number, "body.model"))
            lines.append(problem)
        else:
            errors.append(problem)
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    return lines, errors


def _check_line(
    raw: str, number: int, endpoint: str, norm: Any, seen: set[str]
) -> BatchLine | dict[str, Any]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return _error("invalid_json_line", "This line is not parseable as valid JSON.", number)
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _error(
            "missing_required_parameter", "Missing required parameter: 'custom_id'.", number, "custom_id"
        )
    if obj.get("method") != "POST":
        return _error("invalid_method", "Only the POST method is supported in a batch.", number, "method")
    if norm(obj.get("url")) != endpoint:
        message = f"The url '{obj.get('url')}' does not match the batch's endpoint '{endpoint}'."
        return _error("url_mismatch", message, number, "url")
    body = obj.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(model, str) or not model:
        return _error(
            "missing_required_parameter", "Missing required parameter: 'body.model'.", number, "body.model"
        )
    if custom_id in seen:
        message = f"The custom_id '{custom_id}' appears more than once; each must be unique in a batch."
        return _error("duplicate_custom_id", message, number, "custom_id")
    seen.add(custom_id)
    return BatchLine(custom_id, model, body)


def _error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def line_runner(emu: Emulator, endpoint: str) -> LineRunner:
    """Answers one line of a batch to `endpoint` the way the online endpoint would."""
    embeddings = endpoint.endswith("/embeddings")

    def run(line: BatchLine, fail: bool) -> LineResult:
        request_id = new_id("req_", 32)
        if fail:
            body = _error_body(
                "The server had an error processing your request.", "server_error", "server_error"
            )
            return LineResult(500, body, request_id)
        if embeddings:
            return _embed(line, request_id)
        if not line.request.get("messages"):
            body = _error_body(
                "'messages' must be a non-empty array", "invalid_request_error", None, "messages"
            )
            return LineResult(400, body, request_id)
        answer = emu.answer(parse_openai(line.request, line.model))
        return LineResult(
            200,
            completion_body(answer, line.model),
            answer.request_id,
            answer.input_tokens,
            answer.output_tokens,
        )

    return run


def embedding_vector(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on the model and the text."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{model}\n{block}\n{text}".encode()).digest()
        values.extend(b / 127.5 - 1 for b in digest)
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _embed(line: BatchLine, request_id: str) -> LineResult:
    given = line.request.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        body = _error_body(
            "'input' must be a string or a non-empty array of strings", "invalid_request_error", None
        )
        return LineResult(400, body, request_id)
    dimensions = line.request.get("dimensions") or EMBEDDING_DIMENSIONS
    tokens = sum(count_tokens(text) for text in inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": embedding_vector(line.model, text, int(dimensions))}
        for i, text in enumerate(inputs)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": line.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return LineResult(200, body, request_id, tokens, 0)


def result_line(line: BatchLine) -> dict[str, Any]:
    """A line that ran: in the output file when it answered 200, else in the error file."""
    assert line.result is not None
    response = {
        "status_code": line.result.status,
        "request_id": line.result.request_id,
        "body": line.result.body,
    }
    return {"id": new_id("batch_req_", 32), "custom_id": line.custom_id, "response": response, "error": None}


UNRUN_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


def unrun_line(line: BatchLine, code: str) -> dict[str, Any]:
    """A line the batch never ran (it expired or was cancelled first): in the error file."""
    error = {"code": code, "message": UNRUN_MESSAGES[code]}
    return {"id": new_id("batch_req_", 32), "custom_id": line.custom_id, "response": None, "error": error}
