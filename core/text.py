"""Text as every store downstream can keep it: what a model or provider says may hold a NUL
character (Postgres text cannot) or an unpaired surrogate (not UTF-8: Postgres, Redis and JSON
encoders refuse it). `storable` drops the one and replaces the other with "?", the same as the
API's driver-level dumper (`jobstore.db.store_any_text`)."""

from __future__ import annotations


def storable(text: str) -> str:
    """`text` without NUL characters and with each unpaired surrogate replaced by "?"."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
