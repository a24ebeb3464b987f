"""The `/v1/embeddings` lines of an OpenAI batch input file, packed into provider calls.

Each line is OpenAI's embeddings body (`model`, `input` a string or a list, `dimensions`,
`encoding_format`) under a `custom_id`. Whole lines are packed, in order, into as few calls
as the model's per-call limits allow (10,000 one-text lines are 5 calls to OpenAI, not 10,000),
one held job per call that notes how many lines it carries (`metadata.lines`: the batch's
request_counts are in lines, as OpenAI's are), and each line's output is rebuilt from its
inputs' vectors at finalize (`jobstore/embedding_results.py`).

A line that cannot be used (bad JSON, an unknown or chat model, more inputs than one call
takes, an empty text) fails alone into the error file. Every line must name the same model,
and ask for the same dimensions: a line naming another refuses the whole batch (400
`mixed_models`, `mixed_dimensions`), since one batch of vectors is one corpus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from api.batch_intake import Intake
from api.embedding_intake import Item, check_dimensions, embedding_model, input_type_of, item, one_model
from api.errors import ApiError
from api.schemas.embeddings import EmbeddingsCreate
from jobstore.batches import HELD_UNTIL
from jobstore.embedding_jobs import embedding_job_row, embedding_request
from routing.catalog import Catalog, ModelSpec
from routing.embeddings import EmbeddingPlanError, plan_calls

ENDPOINT = "/v1/embeddings"


@dataclass
class _Pending:
    """The lines of the call being packed."""

    items: list[Item] = field(default_factory=list)
    lines: int = 0
    tokens: int = 0  # calibrated, as plan_calls counts them
    first_line: int = 0


@dataclass
class EmbeddingLines:
    """Adds `/v1/embeddings` lines to an OpenAI batch (see the module docstring)."""

    intake: Intake
    catalog: Catalog
    model: ModelSpec | None = None
    model_name: str = ""
    model_line: int = 0
    dimensions: int | None = None
    pending: dict[str | None, _Pending] = field(default_factory=dict)  # by input_type

    def add(self, line: int, raw: bytes) -> None:
        custom_id, body = self._request(line, raw)
        if custom_id is None or body is None:
            return
        try:
            model = embedding_model(body.model, self.catalog, param="body.model")
            check_dimensions(model, body.dimensions, param="body.dimensions")
            input_type = input_type_of(body.input_type, param="body.input_type")
            texts = _texts(body)
        except ApiError as exc:
            self.intake.fail_line(line, custom_id, exc.code or "invalid_line", exc.message)
            return
        self._same_corpus(line, body, model)
        encoding: dict[str, Any] = {"encoding_format": "base64"} if body.encoding_format == "base64" else {}
        items = [
            item(f"{custom_id}:{index}", text, line=custom_id, index=index, **encoding)
            for index, text in enumerate(texts)
        ]
        try:
            calls = plan_calls([i.input for i in items], model)
        except EmbeddingPlanError as exc:
            self.intake.fail_line(line, custom_id, "invalid_input", str(exc))
            return
        if len(calls) > 1:
            self.intake.fail_line(
                line,
                custom_id,
                "too_many_inputs",
                f"{len(items)} inputs ({sum(c.tokens for c in calls)} tokens) do not fit "
                f"one call to {model.id} (at most {model.max_inputs_per_call} inputs"
                + (f", {model.max_tokens_per_call} tokens" if model.max_tokens_per_call else "")
                + "): split the line",
            )
            return
        self._pack(line, input_type.value if input_type else None, items, calls[0].tokens)
        self.intake.accepted += 1

    def _request(self, line: int, raw: bytes) -> tuple[str | None, EmbeddingsCreate | None]:
        """The line's custom_id and body, or (None, None) once it has failed alone."""
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self.intake.fail_line(line, None, "invalid_line", f"not valid JSON: {exc}")
            return None, None
        if not isinstance(obj, dict):
            self.intake.fail_line(line, None, "invalid_line", "expected a JSON object")
            return None, None
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            self.intake.fail_line(line, None, "invalid_line", "'custom_id' must be a non-empty string")
            return None, None
        if not self.intake.claim_id(line, custom_id):
            return None, None
        if obj.get("method", "POST") != "POST" or obj.get("url") != ENDPOINT:
            self.intake.fail_line(
                line, custom_id, "invalid_line", f"'method' must be POST and 'url' {ENDPOINT!r} (the batch's)"
            )
            return None, None
        try:
            return custom_id, EmbeddingsCreate.model_validate(obj.get("body"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.intake.fail_line(line, custom_id, "invalid_value", f"body.{where}: {first['msg']}")
            return None, None

    def _same_corpus(self, line: int, body: EmbeddingsCreate, model: ModelSpec) -> None:
        """One model and one vector length for the whole batch: else it is refused, whole."""
        if self.model is None:
            self.model, self.model_name = model, body.model
            self.model_line, self.dimensions = line, body.dimensions
            return
        try:
            one_model([self.model_name, body.model], self.catalog, param="input_file_id")
        except ApiError as exc:
            first = f"line {self.model_line} {self.model_name!r}"
            exc.message = f"line {line} names {body.model!r} and {first}: {exc.message}"
            raise
        if body.dimensions != self.dimensions:
            raise ApiError(
                400,
                f"line {line} asks for dimensions {body.dimensions} and line {self.model_line} for "
                f"{self.dimensions}: one batch's vectors must share one length (split the file)",
                param="input_file_id",
                code="mixed_dimensions",
            )

    def _pack(self, line: int, input_type: str | None, items: list[Item], tokens: int) -> None:
        model = self.model
        assert model is not None and model.max_inputs_per_call is not None
        pending = self.pending.setdefault(input_type, _Pending())
        full = len(pending.items) + len(items) > model.max_inputs_per_call or (
            model.max_tokens_per_call is not None and pending.tokens + tokens > model.max_tokens_per_call
        )
        if pending.items and full:
            self._emit(input_type, pending)
            pending = self.pending[input_type] = _Pending()
        if not pending.items:
            pending.first_line = line
        pending.items += items
        pending.lines += 1
        pending.tokens += tokens

    def _emit(self, input_type: str | None, pending: _Pending) -> None:
        request = embedding_request(
            [i.stored() for i in pending.items], dimensions=self.dimensions, input_type=input_type
        )
        self.intake.writer.add(
            embedding_job_row(
                owner_id=self.intake.batch.owner_id,
                model=self.model_name,
                request=request,
                batch_id=self.intake.batch.id,
                line_number=pending.first_line,
                metadata={"lines": pending.lines},
                not_before=HELD_UNTIL,  # the feeder releases it
            )
        )

    def close(self) -> None:
        for input_type, pending in self.pending.items():
            if pending.items:
                self._emit(input_type, pending)
        self.pending.clear()


def _texts(body: EmbeddingsCreate) -> list[str]:
    value = body.input
    if isinstance(value, str):
        texts = [value]
    elif value and all(isinstance(v, str) for v in value):
        texts = [str(v) for v in value]
    elif not value:
        raise ApiError(
            400, "body.input must hold at least one text", param="body.input", code="invalid_value"
        )
    else:
        raise ApiError(400, "body.input: token arrays are not accepted; send text", code="invalid_value")
    return texts


def add_embedding_lines(intake: Intake, catalog: Catalog, lines: Iterable[bytes]) -> None:
    """Every line of the input file (blank lines skipped, keeping their numbers)."""
    packer = EmbeddingLines(intake, catalog)
    for number, raw in enumerate(lines, 1):
        if raw.strip():
            packer.add(number, raw)
    packer.close()
