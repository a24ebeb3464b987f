"""The providers that have a batch API llmqueue can use: each one's client and its limits.

A provider batch sends many requests at once through the provider's own batch API, at about
half the online price, answered within a completion window instead of at once. Routing's
planning (`routing/economy.py`) reads the limits here to split jobs into batches and to
decide whether a group of jobs can wait for the window; the provider-batch workers load the
client (`workers/providers/<provider>_batch.py`, imported only where it is used, as the
online adapters are).

A provider missing here has no provider batch in llmqueue, whatever its catalog prices say.
Bedrock has a batch API (`CreateModelInvocationJob`), but it reads its input from and writes
its results to S3 under an IAM service role, with at least 100 records per job: it needs a
bucket, a role and S3 in the emulator before it can join this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.providers import ProviderName

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
MB = 1024 * 1024


class BatchInput(StrEnum):
    """How a provider takes a batch's requests."""

    FILE = "file"  # a JSONL file uploaded first, then named by the batch
    INLINE = "inline"  # the requests inside the create call itself


@dataclass(frozen=True)
class BatchLimits:
    """What one provider batch may hold, and how long the provider may take."""

    max_lines: int | None  # requests per batch; None: the provider documents no count
    max_bytes: int  # of the batch's input (the JSONL file, or the inline create call)
    # The completion window llmqueue gives the provider: past it, unfinished lines are
    # cancelled and go online. Every supported provider promises (or targets) 24 hours.
    window_s: float
    # When the provider itself stops a batch and expires its unfinished lines; None: never.
    expires_after_s: float | None
    # Input tokens that may be enqueued (in batches not yet ended) for one model or
    # deployment. Every provider that has this quota sets it by account tier, so None here;
    # a deployment states its own (`batch_enqueued_tokens` in the catalog).
    enqueued_tokens: int | None
    input: BatchInput


@dataclass(frozen=True)
class ProviderBatchSpec:
    provider: ProviderName
    client: str  # "module:Class" of the provider-batch client
    limits: BatchLimits


PROVIDER_BATCHES: dict[ProviderName, ProviderBatchSpec] = {
    spec.provider: spec
    for spec in (
        # OpenAI: "up to 50,000 requests, and can be up to 200 MB in size"; only "24h" is a
        # valid completion_window, and a batch not done by then expires (platform.openai.com
        # API reference, Batch: create). Enqueued tokens: per model, by usage tier (the
        # "batch queue limit" column of the rate-limit table).
        ProviderBatchSpec(
            provider=ProviderName.OPENAI,
            client="workers.providers.openai_batch:OpenAIBatchClient",
            limits=BatchLimits(50_000, 200 * MB, DAY_S, DAY_S, None, BatchInput.FILE),
        ),
        # Azure OpenAI global batch: 100,000 requests per file, 200 MB per input file, 500
        # files per resource (learn.microsoft.com, Azure OpenAI quotas and limits: "Global
        # batch limits"); a 24-hour target turnaround, but "we do not expire the jobs that
        # take longer" (how-to/batch). Enqueued tokens: per deployment, by subscription type.
        ProviderBatchSpec(
            provider=ProviderName.AZURE,
            client="workers.providers.azure_batch:AzureBatchClient",
            limits=BatchLimits(100_000, 200 * MB, DAY_S, None, None, BatchInput.FILE),
        ),
        # Anthropic Message Batches: "limited to either 100,000 Message requests or 256 MB in
        # size, whichever is reached first"; a batch expires if not done within 24 hours
        # (docs.anthropic.com, build-with-claude/batch-processing). Its queue limit counts
        # requests per tier, not tokens.
        ProviderBatchSpec(
            provider=ProviderName.ANTHROPIC,
            client="workers.providers.anthropic_batch:AnthropicBatchClient",
            limits=BatchLimits(100_000, 256 * MB, DAY_S, DAY_S, None, BatchInput.INLINE),
        ),
        # Gemini Batch API: inline requests while "the total request size" stays "under 20MB"
        # (larger batches need an input file, which llmqueue does not send yet); a 24-hour
        # target turnaround, and a job still pending or running after 48 hours expires
        # (ai.google.dev, gemini-api/docs/batch-api). Enqueued tokens: per model, by tier.
        ProviderBatchSpec(
            provider=ProviderName.GEMINI,
            client="workers.providers.gemini_batch:GeminiBatchClient",
            limits=BatchLimits(None, 20 * MB, DAY_S, 2 * DAY_S, None, BatchInput.INLINE),
        ),
        # Mistral batch jobs: at most 1 million ongoing requests per workspace (docs.mistral.ai,
        # capabilities/batch, FAQ), input files up to 512 MB (the Files API's upload limit);
        # `timeout_hours` defaults to 24, and llmqueue sends 24.
        ProviderBatchSpec(
            provider=ProviderName.MISTRAL,
            client="workers.providers.mistral_batch:MistralBatchClient",
            limits=BatchLimits(1_000_000, 512 * MB, DAY_S, DAY_S, None, BatchInput.FILE),
        ),
    )
}


def provider_batch_spec(provider: str) -> ProviderBatchSpec | None:
    """The batch API of `provider`, or None when llmqueue has none for it."""
    try:
        return PROVIDER_BATCHES.get(ProviderName(provider))
    except ValueError:
        return None
