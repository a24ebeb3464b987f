"""What one request may carry, checked at intake: messages, images, metadata, the lines of an
upload, and webhook URLs (never to an internal address). The limits themselves are settings
(`core/settings.py`, `LLMQUEUE_MAX_*`); the body's own size is limited while it is read
(`api/guard.py`).

Each refusal is an ApiError naming the limit (its setting) and where (`param`): a size is a
413, a count or a length a 422. Inside a batch's input a request past a limit fails alone,
like any other bad line; an upload past its size, line count or line length is refused whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import IO, Any

from api.errors import ApiError
from core.settings import get_settings
from core.types import Message
from workers import outbound

MAX_URL_CHARS = 2048


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def check_messages(messages: Sequence[Message], where: str = "") -> None:
    """At most max_messages messages, max_images image parts, each data: URL image at most
    max_image_data_url_bytes."""
    settings = get_settings()
    if len(messages) > settings.max_messages:
        raise ApiError(
            422,
            f"{len(messages)} messages; at most {settings.max_messages} may be sent in one request "
            "(max_messages)",
            param=f"{where}messages",
            code="too_many_messages",
        )
    images = 0
    for i, message in enumerate(messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if part.type != "image_url" or part.image_url is None:
                continue
            images += 1
            param = f"{where}messages.{i}.content.{j}.image_url.url"
            if images > settings.max_images:
                raise ApiError(
                    422,
                    f"more than {settings.max_images} images in one request (max_images)",
                    param=param,
                    code="too_many_images",
                )
            url = part.image_url.url
            if url.startswith("data:") and len(url) > settings.max_image_data_url_bytes:
                raise ApiError(
                    413,
                    f"this image's data URL is {_mib(len(url))}; at most "
                    f"{_mib(settings.max_image_data_url_bytes)} (max_image_data_url_bytes)",
                    param=param,
                    code="image_too_large",
                )


def check_metadata(metadata: dict[str, Any] | None, param: str = "metadata") -> None:
    """OpenAI's metadata rules: at most 16 pairs, keys up to 64 characters, values up to 512
    (a value that is not text is measured as JSON), and the whole at most max_metadata_bytes."""
    if not metadata:
        return
    settings = get_settings()
    if len(metadata) > settings.max_metadata_pairs:
        raise ApiError(
            422,
            f"metadata has {len(metadata)} keys; at most {settings.max_metadata_pairs} (max_metadata_pairs)",
            param=param,
            code="metadata_too_many_keys",
        )
    for key, value in metadata.items():
        if len(key) > settings.max_metadata_key_chars:
            raise ApiError(
                422,
                f"metadata key {key[:20]!r}... is {len(key)} characters; at most "
                f"{settings.max_metadata_key_chars} (max_metadata_key_chars)",
                param=param,
                code="metadata_key_too_long",
            )
        size = len(value) if isinstance(value, str) else len(json.dumps(value, default=str))
        if size > settings.max_metadata_value_chars:
            raise ApiError(
                422,
                f"metadata value of {key!r} is {size} characters; at most "
                f"{settings.max_metadata_value_chars} (max_metadata_value_chars)",
                param=f"{param}.{key}",
                code="metadata_value_too_long",
            )
    total = len(json.dumps(metadata, default=str).encode())
    if total > settings.max_metadata_bytes:
        raise ApiError(
            422,
            f"metadata is {total} bytes as JSON; at most {settings.max_metadata_bytes} (max_metadata_bytes)",
            param=param,
            code="metadata_too_large",
        )


class UploadLines:
    """Counts an upload's lines as its bytes go by, refusing it (413, `param`) past the upload
    size, the line count or the line length. Blank lines are not requests and do not count."""

    def __init__(self, param: str) -> None:
        settings = get_settings()
        self.param = param
        self.max_bytes = settings.max_upload_bytes
        self.max_lines = settings.max_upload_lines
        self.max_line = settings.max_line_bytes
        self.bytes = 0
        self.lines = 0  # lines with content, ended or not
        self.line_number = 1
        self._current = 0  # bytes of the line being read
        self._current_blank = True

    def feed(self, block: bytes) -> None:
        self.bytes += len(block)
        if self.bytes > self.max_bytes:
            raise ApiError(
                413,
                f"the upload is larger than {_mib(self.max_bytes)} (max_upload_bytes)",
                param=self.param,
                code="upload_too_large",
            )
        start = 0
        while start < len(block):
            end = block.find(b"\n", start)
            piece = block[start:] if end < 0 else block[start:end]
            self._grow(piece)
            if end < 0:
                break
            self._end_line()
            start = end + 1

    def _grow(self, piece: bytes) -> None:
        if not piece:
            return
        self._current += len(piece)
        if self._current > self.max_line:
            raise ApiError(
                413,
                f"line {self.line_number} is longer than {_mib(self.max_line)} (max_line_bytes)",
                param=self.param,
                code="line_too_long",
            )
        if self._current_blank and piece.strip():
            self._current_blank = False
            self.lines += 1
            if self.lines > self.max_lines:
                raise ApiError(
                    413,
                    f"the upload has more than {self.max_lines} lines (max_upload_lines); "
                    "split it into several",
                    param=self.param,
                    code="too_many_lines",
                )

    def _end_line(self) -> None:
        self.line_number += 1
        self._current = 0
        self._current_blank = True


def limited_lines(binary: IO[bytes], param: str) -> Iterator[bytes]:
    """An upload's lines without their endings, read a line at a time and never more than
    max_line_bytes at once; the upload is refused (413) past any upload limit."""
    counter = UploadLines(param)
    while True:
        raw = binary.readline(counter.max_line + 2)
        if not raw:
            return
        counter.feed(raw)
        yield raw.rstrip(b"\r\n")


def check_placeholder(prompt: str, placeholder: str) -> None:
    """A document batch's prompt names where each document goes exactly once."""
    found = prompt.count(placeholder)
    if found != 1:
        raise ApiError(
            422,
            f"prompt must contain {placeholder} exactly once, where each document's text goes "
            f"(it contains it {found} times)",
            param="prompt",
            code="missing_placeholder" if found == 0 else "repeated_placeholder",
        )


def check_webhook_url(url: str | None, param: str) -> None:
    """A webhook URL llmqueue will POST to: http(s), and not at an internal address now (it is
    checked again at every delivery: DNS can change). A 422 naming why, at `param`."""
    if url is None:
        return
    if len(url) > MAX_URL_CHARS:
        raise ApiError(
            422, f"{param} is longer than {MAX_URL_CHARS} characters", param=param, code="invalid_value"
        )
    try:
        outbound.check_url(url, outbound.Policy.of(webhook=True))
    except outbound.Refused as exc:
        raise ApiError(422, f"{param} refused: {exc}", param=param, code="webhook_url_refused") from None
