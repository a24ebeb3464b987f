"""kombu's Redis transport, made to survive Redis going away while messages are unacked.

When its connection to Redis breaks, a Celery worker closes the channel, and kombu's Redis
transport then tries to put the messages it had delivered but not yet acked back on their
queues, through a connection that is already gone: `AttributeError: 'NoneType' object has no
attribute 'hostname'`. Celery counts that as unrecoverable and the worker stops (seen here in
every run of a Redis restart mid-batch; kombu#582 is an old relative). This transport lets that
one restore fail with a warning instead: nothing is lost, because the job store is the truth
(claims with leases, and the sweeper, send again whatever a message carried), and the worker
reconnects when Redis is back. The same holds for an ack (or reject) that comes after the
connection broke (`AttributeError: 'NoneType' object has no attribute 'client'`, raised into
Celery's event loop): the message is gone with the old Redis or will come again, and a claim
in Postgres decides whether its work runs. Every other behaviour is kombu's own.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked_once(self, stderr: Any = None) -> Any:
        try:
            return super().restore_unacked_once(stderr)  # type: ignore[no-untyped-call]  # kombu is untyped
        except AttributeError:
            log.warning(
                "could not put unacked messages back: the broker connection is gone; the sweeper sends them"
            )
            return None

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except AttributeError:
            log.warning("could not ack a message: the broker connection is gone")

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except AttributeError:
            log.warning("could not reject a message: the broker connection is gone")


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
