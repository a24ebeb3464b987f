"""The Celery application and its configuration.

Postgres is the result store, so Celery's results are ignored. Messages are JSON, acked
late (after the task's work is committed), and a message unacked for longer than the
visibility timeout (longer than any provider call) goes to another worker: that plus the
conditional updates in `jobstore.transitions` is what makes a killed worker lose nothing.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue as KombuQueue

from core.settings import get_settings
from workers.queues import ALL_QUEUES, Priority, Queue


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("llmqueue", include=["workers.tasks", "workers.startup"])
    transport_options: dict[str, Any] = {}
    transport: str | None = None
    broker = settings.celery_broker_url
    if broker.startswith(("redis://", "rediss://")):
        transport = "workers.broker:Transport"  # kombu's, surviving a Redis restart (see broker.py)
        transport_options = {
            "visibility_timeout": settings.visibility_timeout_s,
            # Tests give each run its own key prefix so parallel runs never share queues.
            "global_keyprefix": settings.redis_prefix,
            # Sweep for messages of dead workers often enough to matter at this timeout
            # (kombu's default scans only every ~100 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        }
    app.conf.update(
        broker_url=broker,
        broker_transport=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=settings.broker_max_retries or None,  # None: for ever
        broker_transport_options=transport_options,
        broker_pool_limit=50,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,  # Flower watches these
        task_send_sent_event=settings.task_events and settings.task_sent_events,
        task_default_queue=Queue.DISPATCH.value,
        task_default_priority=Priority.NORMAL.value,  # see workers/queues.Priority
        task_queues=[KombuQueue(name) for name in ALL_QUEUES],  # type: ignore[no-untyped-call]
        task_routes={"llmqueue.dispatch": {"queue": Queue.DISPATCH.value}},
        timezone="UTC",
        enable_utc=True,
    )
    return app


app = make_celery()
