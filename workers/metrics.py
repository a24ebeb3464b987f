"""Every Prometheus metric llmqueue exports, defined here and nowhere else.

Two kinds:

- What only a worker sees as it happens, kept in the worker process (`WORKER_REGISTRY`) and
  recorded by one-line calls: each provider call's latency by deployment and outcome, retries
  and failovers, and the rate-limit use the provider's own headers report. A worker serves
  them on `LLMQUEUE_METRICS_PORT` (`serve_worker_metrics`), one scrape target per worker
  process: workers run in separate containers with no shared disk, where the multiprocess
  mode's shared directory (and its per-pid files, colliding across containers whose
  processes are all pid 1) would be a liability; Prometheus's own `up` then tells a dead
  worker from an idle one.
- What lives in Postgres, Redis and the broker, computed when scraped (`StoreCollector`,
  served by the API at `/metrics`): jobs by status, tokens and spend per model and provider
  (summed from the jobs table, so they equal the database exactly), queue depth per queue,
  and each deployment's breaker state, error rate and traffic share from the shared health
  store. Every API process answers the same figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from jobstore.db import session_factory
from jobstore.models import Job, JobStatus
from routing.breaker import BreakerStatus
from routing.catalog import Deployment, get_catalog
from workers.policy import Fail, Failover

log = logging.getLogger(__name__)
BREAKER_STATES: tuple[BreakerStatus, ...] = get_args(BreakerStatus)

# ---------------------------------------------------------------- in the worker process

WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=WORKER_REGISTRY)

CALL_SECONDS = Histogram(
    "llmqueue_provider_call_duration_seconds",
    "One provider call's duration, by deployment and outcome (success or the error kind).",
    ["provider", "deployment", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
    registry=WORKER_REGISTRY,
)
RETRIES = Counter(
    "llmqueue_retries_total",
    "Failed calls retried on the same deployment.",
    ["provider", "deployment"],
    registry=WORKER_REGISTRY,
)
FAILOVERS = Counter(
    "llmqueue_failovers_total",
    "Jobs moved off a deployment to the next candidate, by the deployment they left.",
    ["provider", "deployment"],
    registry=WORKER_REGISTRY,
)
JOB_FAILURES = Counter(
    "llmqueue_failed_after_call_total",
    "Jobs failed after a call, by the deployment of that call and the job's error.",
    ["provider", "deployment", "error"],
    registry=WORKER_REGISTRY,
)
RATE_LIMIT_USED = Gauge(
    "llmqueue_rate_limit_used_ratio",
    "Share of the provider's rate limit used, from the last answer's rate-limit headers.",
    ["provider", "deployment", "limit"],
    registry=WORKER_REGISTRY,
)

# (limit header, remaining header) per kind of limit, as each provider names them.
RATE_LIMIT_HEADERS = {
    "requests": (
        ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"),
        ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining"),
    ),
    "tokens": (
        ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"),
        ("anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining"),
        ("x-ratelimitbysize-limit-minute", "x-ratelimitbysize-remaining-minute"),
    ),
}


def rate_limit_use(headers: dict[str, str]) -> dict[str, float]:
    """Used share of each limit the headers report: {"requests": 0.25, "tokens": 0.1}."""
    use: dict[str, float] = {}
    for kind, pairs in RATE_LIMIT_HEADERS.items():
        for limit_name, remaining_name in pairs:
            try:
                limit, remaining = float(headers[limit_name]), float(headers[remaining_name])
            except (KeyError, ValueError):
                continue
            if limit > 0:
                use[kind] = min(1.0, max(0.0, 1 - remaining / limit))
                break
    return use


def provider_call(
    deployment: Deployment, latency_ms: float, outcome: str, headers: dict[str, str] | None = None
) -> None:
    """A provider call ended: `outcome` is "success" or the error kind."""
    CALL_SECONDS.labels(deployment.provider, deployment.name, outcome).observe(latency_ms / 1000)
    for kind, used in rate_limit_use(headers or {}).items():
        RATE_LIMIT_USED.labels(deployment.provider, deployment.name, kind).set(used)


def after_failure(provider: str, deployment: str, decision: object) -> None:
    """What the retry policy decided after a failed call (a `workers.policy` decision)."""
    if isinstance(decision, Failover):
        FAILOVERS.labels(provider, deployment).inc()
    elif isinstance(decision, Fail):
        JOB_FAILURES.labels(provider, deployment, str(decision.error)).inc()
    else:
        RETRIES.labels(provider, deployment).inc()


def failover(deployment: str) -> None:
    """A job left a deployment without a call (its breaker refused it before the claim)."""
    found = get_catalog().deployment(deployment)
    FAILOVERS.labels(found.provider if found else "", deployment).inc()


def serve_worker_metrics(port: int | None) -> None:
    """Serve this worker's metrics on `port` (not at all for None or 0); a port taken is
    logged, not fatal: the worker's job is calls, not metrics."""
    if not port:
        return
    try:
        start_http_server(port, registry=WORKER_REGISTRY)
    except OSError as exc:
        log.warning("worker metrics not served on port %s: %s", port, exc)
        return
    log.info("worker metrics on :%s/metrics", port)


# ---------------------------------------------------------------- computed when scraped


class StoreCollector(Collector):
    """Figures read from the job store, the broker and the health store at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from _guarded("queue depth", self._queues)
        yield from _guarded("deployment health", self._health)

    def _jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("llmqueue_jobs", "Jobs in the job store, by status.", labels=["status"])
        tokens = CounterMetricFamily(
            "llmqueue_tokens",
            "Tokens of every job, by the model and provider that served it, and kind.",
            labels=["provider", "model", "kind"],
        )
        spend = CounterMetricFamily(
            "llmqueue_spend_usd",
            "USD spent by every job, by the model and provider that served it.",
            labels=["provider", "model"],
        )
        with session_factory()() as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            usage = session.execute(
                select(
                    Job.provider,
                    Job.model,
                    func.coalesce(func.sum(Job.input_tokens), 0),
                    func.coalesce(func.sum(Job.cached_input_tokens), 0),
                    func.coalesce(func.sum(Job.output_tokens), 0),
                    func.coalesce(func.sum(Job.reasoning_tokens), 0),
                    func.coalesce(func.sum(Job.cost_usd), 0),
                )
                .where(Job.model.is_not(None))
                .group_by(Job.provider, Job.model)
            ).all()
        for status in JobStatus:
            jobs.add_metric([status.value], int(by_status.get(status.value, 0)))
        for provider, model, n_in, n_cached, n_out, n_reasoning, cost in usage:
            labels = [str(provider or ""), str(model)]
            for kind, n in (
                ("input", n_in),
                ("cached_input", n_cached),
                ("output", n_out),
                ("reasoning", n_reasoning),
            ):
                tokens.add_metric([*labels, kind], int(n))
            spend.add_metric(labels, float(Decimal(cost)))
        yield from (jobs, tokens, spend)

    def _queues(self) -> Iterator[Metric]:
        from workers.sweeper import queue_depths  # the broker connection: only when scraped

        depth = GaugeMetricFamily(
            "llmqueue_queue_depth", "Messages waiting on each queue (every priority).", labels=["queue"]
        )
        for queue, waiting in queue_depths().items():
            depth.add_metric([queue], waiting)
        yield depth

    def _health(self) -> Iterator[Metric]:
        from workers.health import health_snapshot

        catalog = get_catalog()
        snapshot = health_snapshot(list(catalog.deployments), time.time())
        state = GaugeMetricFamily(
            "llmqueue_breaker_state",
            "1 for each deployment's current breaker state (closed, open, half_open).",
            labels=["provider", "deployment", "state"],
        )
        errors = GaugeMetricFamily(
            "llmqueue_deployment_error_rate",
            "Failed share of calls in the breaker's sliding window.",
            labels=["provider", "deployment"],
        )
        share = GaugeMetricFamily(
            "llmqueue_deployment_traffic_share",
            "Share of traffic routed at the deployment's rank (below 1 while it ramps back).",
            labels=["provider", "deployment"],
        )
        for name, dep in sorted(catalog.deployments.items()):
            health = snapshot[name]
            for value in BREAKER_STATES:
                state.add_metric([dep.provider, name, value], 1.0 if health.breaker == value else 0.0)
            errors.add_metric([dep.provider, name], health.error_rate)
            share.add_metric([dep.provider, name], health.traffic_share)
        yield from (state, errors, share)


def _guarded(what: str, produce: Any) -> Iterator[Metric]:
    """A part that cannot be read now (Redis or the broker away) is left out of this scrape,
    logged; the job store's figures are still answered."""
    try:
        yield from list(produce())
    except Exception:
        log.warning("metrics: could not read %s", what, exc_info=True)


def api_registry() -> CollectorRegistry:
    """The registry the API's /metrics serves: the store's figures and the process's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector())
    ProcessCollector(registry=registry)
    return registry
