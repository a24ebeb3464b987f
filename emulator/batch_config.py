"""How the emulated batch APIs behave: timing, per-line failures, expiry and limits.

`BatchConfig` is reached from the emulator's configuration as `EmulatorConfig.batch` (so
`POST /_emulator/config` with a `"batch"` object sets it). Its own fields apply to every
provider; `providers` overrides some of them for one provider ("openai", "azure",
"anthropic", "gemini", "mistral"), field by field. A batch keeps the settings in force when it was created,
so reconfiguring never rewrites the timeline of a batch already running.

Timeline of a batch (seconds after it is created): validating for `validating_s`, then its
lines complete one after another, evenly spread, until `completion_s - finalizing_s`, then
finalizing until `completion_s`, when it is completed. `expire_after_s` ends it earlier
(lines not done by then expire); `None` keeps the provider's own window.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class BatchSettings(BaseModel):
    completion_s: float = Field(default=2.0, ge=0)  # from creation to completed
    validating_s: float = Field(default=0.0, ge=0)  # the first part of completion_s
    finalizing_s: float = Field(default=0.0, ge=0)  # the last part of completion_s
    cancelling_s: float = Field(default=0.0, ge=0)  # from a cancel request to cancelled
    line_failure_rate: float = Field(default=0, ge=0, le=1)  # lines answered with a 500, by seed
    expire_after_s: float | None = Field(default=None, ge=0)  # None: the provider's own window
    max_lines: int | None = Field(default=None, ge=1)  # None: the provider's own limit
    max_bytes: int | None = Field(default=None, ge=1)  # None: the provider's own limit
    models: list[str] | None = None  # the models a batch may name; None accepts any


class BatchConfig(BatchSettings):
    providers: dict[str, BatchSettings] = Field(default_factory=dict)

    def for_provider(self, provider: str) -> BatchSettings:
        """These settings with `provider`'s overrides (only the fields it sets) applied."""
        base = BatchSettings.model_validate(self.model_dump(exclude={"providers"}))
        override = self.providers.get(provider)
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(include=override.model_fields_set))
