"""Documents and prompt templates: fill a template, decide whether a document fits its model,
split one that does not (map), and build the request that combines the parts' answers (reduce).

Pure functions, shared by the API (which splits at intake) and the workers (which build a
reduce once its parts have answered). Token counts are routing's (`routing/tokens.py`), so
a part that fits here also passes the router's context filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.providers import provider_spec
from routing.catalog import Catalog, ModelKind
from routing.tokens import PER_MESSAGE_OVERHEAD, count_text, decode, encode

PLACEHOLDER = "{document}"
DEFAULT_OUTPUT_RESERVE = 1024  # routing's largest expected answer when max_tokens is not set
# Room for the "(Part i of n ...)" header and for tokens merging where template and text meet.
PART_HEADER_RESERVE = 32


def fill(template: str, document: str) -> str:
    """The template with the document in place of `{document}` (other braces left alone)."""
    return template.replace(PLACEHOLDER, document)


def user_request(text: str, max_tokens: int | None) -> dict[str, Any]:
    """A chat request as the job store keeps it (ChatRequest's JSON without None fields)."""
    request: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    return request


@dataclass(frozen=True)
class Window:
    """The context a document must fit: the chosen model's, or the largest in the catalog."""

    model_id: str
    provider: str
    context_window: int
    output_reserve: int

    def document_budget(self, template: str) -> int:
        """Tokens of document text one request can carry next to the template and the answer."""
        factor = provider_spec(self.provider).token_calibration
        usable = math.floor((self.context_window - self.output_reserve) / factor)
        overhead = (
            3 + PER_MESSAGE_OVERHEAD + count_text(template.replace(PLACEHOLDER, "")) + PART_HEADER_RESERVE
        )
        return max(0, math.floor(usable * 0.98) - overhead)


def window_for(catalog: Catalog, model: str | None, max_tokens: int | None) -> Window:
    """With a model (or deployment) named, its window; else the catalog's largest, since
    routing then picks a model that fits and only a document no model can take is split."""
    spec = None
    if model:
        deployment = catalog.deployment(model)
        spec = deployment.model if deployment is not None else catalog.model(model)
    if spec is None:
        chat = (m for m in catalog.models.values() if m.kind is ModelKind.CHAT)
        spec = max(chat, key=lambda m: m.context_window)
    reserve = max_tokens if max_tokens is not None else min(DEFAULT_OUTPUT_RESERVE, spec.max_output_tokens)
    return Window(spec.id, spec.provider, spec.context_window, reserve)


def split_document(text: str, budget: int) -> list[str]:
    """The document in parts of at most `budget` tokens; `[text]` when it fits whole."""
    if budget <= 0:
        raise ValueError("the prompt template leaves no room for the document in this model's context")
    if len(text.encode()) <= budget:  # a token is at least one byte: fits without counting
        return [text]
    tokens = encode(text)
    if len(tokens) <= budget:
        return [text]
    return [decode(tokens[i : i + budget]) for i in range(0, len(tokens), budget)]


def part_text(chunk: str, number: int, total: int) -> str:
    return f"(Part {number} of {total} of a longer document.)\n\n{chunk}"


def reduce_text(template: str, answers: list[str]) -> str:
    """The reduce prompt: the instruction, and each part's answer, to combine into one."""
    instruction = fill(template, "[the document]")
    parts = "\n\n".join(f"[Part {i} of {len(answers)}]\n{a.strip()}" for i, a in enumerate(answers, 1))
    return (
        f"A document was too long to read at once, so it was split into {len(answers)} consecutive parts "
        "and the instruction below was answered for each part separately. Combine the partial answers "
        "into one answer to the instruction for the whole document.\n\n"
        f"Instruction:\n{instruction}\n\nPartial answers:\n{parts}"
    )
