"""Downloads: streamed answers that start only once their first chunk is in hand, and a
Content-Disposition any file name survives.

A streamed answer sends its status line before its body; if the body's first read failed
after that (the job store away), the client would get a 200 and a cut connection. So the
first chunk is read in the route, where a failure is still an answer in the error shape
(a 503), and the rest streams after it.

File names come from uploads (anything a client sent: quotes, newlines, non-ASCII). The
header carries an ASCII fallback (`filename=`) and the exact name, percent-encoded as RFC 5987
and RFC 6266 say (`filename*=UTF-8''...`), so no name can break the header or the download.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from urllib.parse import quote

from fastapi.responses import StreamingResponse

_UNSAFE_IN_FALLBACK = set('"\\/;%')


def attachment(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name as `filename*`."""
    fallback = (
        "".join(c if 32 <= ord(c) < 127 and c not in _UNSAFE_IN_FALLBACK else "_" for c in filename).strip()
        or "download"
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def started_stream(
    chunks: Iterator[bytes | str], *, media_type: str, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """A StreamingResponse over `chunks` whose first chunk has already been read (here, in the
    route's thread, so a failure now is answered as an error, not as a cut 200)."""
    first = next(chunks, None)
    body = chunks if first is None else chain([first], chunks)
    return StreamingResponse(body, media_type=media_type, headers=headers)
