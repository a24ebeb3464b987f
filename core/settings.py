"""Process settings from the environment, validated once at start.

With nothing set, llmqueue runs embedded: SQLite files under `.llmqueue/` (or
`$LLMQUEUE_HOME`), kombu's SQLAlchemy transport as the broker, and the built-in emulator
for any provider whose key is missing. `DATABASE_URL` switches the job store to Postgres,
`CELERY_BROKER_URL` (or `REDIS_URL`) the broker to Redis, and `REDIS_URL` turns on shared
health, rate-limit and streaming state.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMQUEUE_", extra="ignore")

    home: Path = Field(default=Path(".llmqueue"))
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    broker_url: str | None = Field(default=None, validation_alias=AliasChoices("CELERY_BROKER_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    redis_prefix: str = "llmq:"
    # Where the built-in emulator listens, and when calls go to it: "auto" (deployments
    # whose key is unset), "always" (tests, benchmarks) or "never".
    emulator_url: str | None = None
    emulator_mode: str = "auto"
    catalog: str | None = None
    provider_timeout_s: float = Field(default=120.0, gt=0)
    # A claimed call's lease: renewed every third of it while the call runs, so a dead worker's
    # calls are taken over this long (plus a sweep) after it stopped.
    lease_s: float = Field(default=15.0, ge=3)
    # A deployment is saturated when a call sent to it now would wait longer than this for a
    # slot under its rate limits; a job whose strategy allows it goes to its next candidate.
    capacity_spill_s: float = Field(default=5.0, ge=0)
    # A batch's jobs in flight (dispatched, not ended) across all batches; the feeder releases
    # more as they end, fairly between keys (workers/feeder.py).
    batch_in_flight: int = Field(default=1000, ge=1)
    # Streams (SSE) open at once per API key in one API process, and the longest one lasts.
    max_streams_per_key: int = Field(default=100, ge=1)
    max_stream_s: float = Field(default=900.0, gt=0)
    # Provider calls in flight per worker process (`llmqueue worker -c`).
    max_in_flight: int = Field(default=200, ge=1)
    # A provider batch (economy mode) is first polled this long after it was submitted, then
    # each wait grows by half, up to the max: a batch takes minutes to hours at the provider.
    provider_batch_poll_s: float = Field(default=30.0, gt=0)
    provider_batch_poll_max_s: float = Field(default=300.0, gt=0)
    # Times a worker tries the broker again before it gives up and exits non-zero (a supervisor
    # restarts it); the waits between grow to 30 s, so 100 is about 45 minutes; 0: for ever.
    broker_max_retries: int = Field(default=100, ge=0)
    # Longer than any call: a message unacked this long is handed to another worker.
    visibility_timeout_s: int = Field(default=3600, gt=0)
    retries_per_deployment: int = Field(default=4, ge=0)
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    max_wait_for_cooldown_s: float = Field(default=900.0, ge=0)
    # A breaker's first cooldown (it doubles on each reopening); short in tests and benchmarks.
    breaker_cooldown_s: float = Field(default=10.0, gt=0)
    # After a breaker closes, the deployment's traffic returns over this long (0: at once).
    breaker_ramp_s: float = Field(default=30.0, ge=0)
    # Seconds between active probe rounds (a 1-token call to every deployment); 0 = off, and
    # health is learned from real calls only.
    active_probe_s: float = Field(default=0.0, ge=0)
    api_base_url: str = "http://127.0.0.1:8000"
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # Postgres may be away or stuck; nothing waits on it for ever. A request waits this long for
    # a pooled connection (well under any client's timeout, so the answer is a 503, not a hang),
    # a new connection this long to open, and any one statement this long to run. A connection
    # whose peer went silent is dropped after db_socket_timeout_s (TCP keepalives and
    # tcp_user_timeout), so a half-open socket does not hold a thread.
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    db_connect_timeout_s: int = Field(default=5, ge=1)
    db_statement_timeout_s: float = Field(default=60.0, ge=0)  # 0: no limit
    db_socket_timeout_s: int = Field(default=30, ge=1)
    # How long an API answer asks a client to wait (Retry-After) when the job store is away.
    db_retry_after_s: int = Field(default=5, ge=1)
    # Celery task events (task-sent/received/succeeded) for Flower's live view. Each is one more
    # Redis publish per task in the API and the workers; LLMQUEUE_TASK_EVENTS=false turns them off.
    task_events: bool = True
    # task-sent events cost the API and the dispatcher a Redis publish per message and add
    # little to Flower's view (received/started/succeeded come from the workers); opt in.
    task_sent_events: bool = False
    # Signs and encrypts the console's session cookie; every API process must share it. Unset,
    # each process makes its own at start (sessions then end with the process).
    session_secret: str | None = Field(default=None, min_length=16)
    # A worker process serves its Prometheus metrics on this port (0 or unset: not served).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # When set, GET /metrics wants `Authorization: Bearer <this>`.
    metrics_token: str | None = None

    # ---- What one request may carry: each refusal is a 413 (size) or a 422 (count, shape) whose
    # message names the limit and whose `param` says where (api/limits.py enforces them).
    max_body_bytes: int = Field(default=32 << 20, ge=1024)  # a JSON body, refused while it is read
    max_upload_bytes: int = Field(default=200 << 20, ge=1024)  # one upload, as OpenAI's Batch API
    max_upload_lines: int = Field(default=50_000, ge=1)  # requests (or documents) in one upload
    max_line_bytes: int = Field(default=32 << 20, ge=1024)  # one line of a JSONL upload
    max_messages: int = Field(default=2048, ge=1)
    max_metadata_pairs: int = Field(default=16, ge=0)  # OpenAI's metadata: 16 pairs,
    max_metadata_key_chars: int = Field(default=64, ge=1)  # keys up to 64 characters,
    max_metadata_value_chars: int = Field(default=512, ge=1)  # values up to 512 (as JSON if not text)
    max_metadata_bytes: int = Field(default=16 << 10, ge=64)  # the whole object, as JSON
    max_images: int = Field(default=50, ge=0)  # image parts in one request
    max_image_data_url_bytes: int = Field(default=20 << 20, ge=1024)  # one data: URL image
    # ---- Requests llmqueue makes to URLs its users give: batch and budget-alert webhooks, and
    # the images a worker fetches for a provider that takes no URLs. They go to public
    # addresses only (checked on every connection and every redirect, workers/outbound.py);
    # networks listed here (CIDRs, comma-separated) are allowed too, and
    # webhook_allow_private=true lets webhooks go anywhere (tests and demos on one machine).
    outbound_allowed_networks: str = ""
    webhook_allow_private: bool = False
    outbound_max_redirects: int = Field(default=5, ge=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Signs every webhook (HMAC-SHA256, a secret per key derived from this one). Unset, one is
    # generated at first use and kept in $LLMQUEUE_HOME/webhook_secret (with a warning): set it
    # when the API and the workers do not share that directory.
    webhook_secret: str | None = Field(default=None, min_length=16)
    # How long OpenAI's "24h" completion window lasts, in seconds: shorter only in tests.
    batch_completion_window_s: float = Field(default=86_400.0, gt=0)

    @field_validator("outbound_allowed_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        import ipaddress

        for item in (v.strip() for v in value.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError as exc:
                    raise ValueError(f"not a network (CIDR): {item!r}: {exc}") from None
        return value

    @property
    def allowed_networks(self) -> tuple[str, ...]:
        return tuple(v.strip() for v in self.outbound_allowed_networks.split(",") if v.strip())

    @field_validator("metrics_token", "session_secret", "webhook_secret", "emulator_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("emulator_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("auto", "always", "never"):
            raise ValueError("LLMQUEUE_EMULATOR_MODE must be auto, always or never")
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def sqlalchemy_url(self) -> str:
        """The job store's URL, with Postgres URLs pinned to the psycopg 3 driver."""
        url = self.database_url or f"sqlite:///{(self.home / 'llmqueue.db').resolve()}"
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def celery_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"


class SettingsError(ValueError):
    """An environment variable with a value the settings cannot take; says which and why."""


@cache
def get_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            info = Settings.model_fields.get(field)
            alias = info.validation_alias if info is not None else None
            name = alias.choices[0] if isinstance(alias, AliasChoices) else f"LLMQUEUE_{field.upper()}"
            problems.append(f"{name}={error.get('input')!r}: {error['msg']}")
        raise SettingsError("bad setting: " + "; ".join(problems)) from None
    if settings.embedded:
        settings.home.mkdir(parents=True, exist_ok=True)
    return settings
