"""What a worker process does once it is ready, before its first task.

Every worker pays its cold start now rather than on its first jobs: database connections;
in provider workers, the adapters of the providers it serves (imported now, so a provider
whose adapter is missing stops the worker with its name) and their SDK clients; in
dispatchers, the tokenizer. Dispatcher workers also run the background loops
(`workers/periodic.py`): the sweeper, the feeder and economy mode's planner, the check of
open batches, the deletion of expired idempotency records, and the optional active probe.
The loop that sends provider batches' due polls runs in dispatchers and provider-batch
workers alike (one of them a round), so a provider batch is polled while either is up.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from core.heap import freeze_startup_heap
from core.settings import get_settings
from jobstore import idempotency
from jobstore.db import warm_pool
from routing.catalog import get_catalog
from routing.tokens import count_text
from workers import periodic
from workers.batch_progress import check_open_batches
from workers.call_loop import get_call_loop, prewarm
from workers.economy_feeder import PLAN_EVERY_S, plan_round
from workers.engine import get_engine
from workers.feeder import FEED_EVERY_S, feed_once
from workers.metrics import serve_worker_metrics
from workers.probes import send_probe_round
from workers.provider_batch_runs import DUE_EVERY_S, send_due, warm_clients
from workers.providers import load_adapters
from workers.queues import Queue
from workers.sweeper import SWEEP_EVERY_S, sweep_once

BATCH_SWEEP_S = 30.0


@worker_ready.connect  # type: ignore[untyped-decorator]  # Celery's signals are untyped
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    serve_worker_metrics(get_settings().metrics_port)  # this worker's own metrics, for Prometheus
    warm_pool()
    queues = {q.name for q in sender.app.amqp.queues.consume_from.values()} if sender else set()
    providers = {q.removeprefix("provider.") for q in queues if q.startswith("provider.")}
    if Queue.DISPATCH.value in queues:
        start_dispatcher_loops()
    if Queue.PROVIDER_BATCH.value in queues:
        warm_clients()  # on the call loop, where the batch clients' calls run
        if Queue.DISPATCH.value not in queues:  # (a dispatcher runs it already)
            periodic.every("provider-batch-due", DUE_EVERY_S, send_due)
    if providers:
        load_adapters(providers)
        warm_provider_clients(providers)
        get_engine()  # its writer renews leases from the start
    freeze_startup_heap()


def start_dispatcher_loops() -> None:
    # Jobs sent one by one come with their token count (counted by the API); a batch's jobs are
    # counted here. Provider workers route failovers with the stored count and load the
    # tokenizer's ~150 MB only if a job without one fails over.
    count_text("warm up the tokenizer")
    periodic.every("sweeper", SWEEP_EVERY_S, sweep_once)
    periodic.every("feeder", FEED_EVERY_S, feed_once)
    periodic.every("economy-planner", PLAN_EVERY_S, plan_round)
    periodic.every("provider-batch-due", DUE_EVERY_S, send_due)
    periodic.every("batch-sweep", BATCH_SWEEP_S, check_open_batches)
    periodic.every("idempotency-cleanup", idempotency.CLEANUP_EVERY_S, idempotency.cleanup)
    probe_s = get_settings().active_probe_s
    if probe_s > 0:
        periodic.every("probe", probe_s, lambda: send_probe_round(probe_s))


def warm_provider_clients(providers: set[str]) -> None:
    settings = get_settings()
    loop = get_call_loop()
    deployments = [d for d in get_catalog().deployments.values() if d.provider in providers]
    loop.run(
        prewarm(
            loop,
            deployments,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=settings.provider_timeout_s,
        ),
        timeout=120,
    )
