"""The optional active probe: off by default, `LLMQUEUE_ACTIVE_PROBE_S=N` turns it on.

Health is learned from real calls. With the probe on, once every N seconds one dispatcher
process (`workers/periodic.py`) sends every deployment a probe on its provider's queue;
the provider worker asks the breaker, makes one tiny call (max_tokens 1) and records the
outcome for the breaker and the error window as it would a job's (not its latency: a
one-token answer says little about a job's). So a provider that goes down trips its breaker
before users' jobs find out, and one that recovers is probed by the probe rather than by a
user's job. Probes cost a token or two per deployment per round (an embedding deployment's is
one embedding of "ping"). Skipped: deployments whose
breaker is cooling down (it would refuse), without credentials (nothing to call, nothing to
count), or whose queue has messages waiting (calls are flowing, or no worker serves it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import TimeoutError as FuturesTimeout

from core.embeddings import EmbeddingRequest
from core.settings import Settings, get_settings
from core.types import ChatRequest, Message
from routing.breaker import DeploymentHealth, breaker_blocks
from routing.catalog import Catalog, Deployment, ModelKind, get_catalog
from workers import health
from workers.call_loop import call_once, get_call_loop
from workers.messages import send_probe
from workers.providers.errors import MissingCredentials, ProviderError, Transient
from workers.queues import provider_queue
from workers.sweeper import idle_broker_queues

log = logging.getLogger(__name__)
PROBE_REQUEST = ChatRequest(messages=[Message(role="user", content="ping")], max_tokens=1)
PROBE_EMBEDDING = EmbeddingRequest(inputs=["ping"])


def deployments_to_probe(
    names: Iterable[str], snapshot: Mapping[str, DeploymentHealth], now: float
) -> list[str]:
    """Every deployment but those whose breaker is still cooling down."""
    return [n for n in names if not breaker_blocks(snapshot.get(n), now)]


def send_probe_round(interval_s: float, catalog: Catalog | None = None) -> int:
    """Send this round's probes; returns how many. (`workers/periodic.py` runs a round every
    `interval_s` seconds in one dispatcher process at a time.)"""
    catalog = catalog or get_catalog()
    # A queue with messages waiting needs no probe: calls are flowing, or no worker serves it
    # (and probes would pile up there; one at most is left waiting).
    idle = idle_broker_queues()
    names = [n for n, d in catalog.deployments.items() if provider_queue(d.provider) in idle]
    now = time.time()
    due = deployments_to_probe(names, health.health_snapshot(names, now), now)
    for name in due:
        send_probe(name, catalog.deployments[name].provider, expires_s=interval_s)
    return len(due)


def probe_deployment(name: str, catalog: Catalog | None = None, settings: Settings | None = None) -> str:
    """One probe call, recorded into the deployment's health; returns what happened."""
    catalog = catalog or get_catalog()
    settings = settings or get_settings()
    deployment = catalog.deployment(name)
    if deployment is None:
        return "not in the catalog"
    loop = get_call_loop()
    try:  # build (or reuse) the adapter first: a deployment without a key is not called
        loop.run(
            loop.adapter(
                deployment,
                emulator_url=settings.emulator_url,
                emulator_mode=settings.emulator_mode,
                timeout_s=settings.provider_timeout_s,
            ),
            timeout=30,
        )
    except MissingCredentials:
        return "no credentials"
    if not health.admit(name, time.time()):
        return "breaker refused"
    try:
        probe_call(deployment, settings)
    except ProviderError as exc:
        health.record_failure(name, time.time(), exc)
        return f"failed: {exc.kind}"
    except FuturesTimeout:
        health.record_failure(name, time.time(), Transient("no answer in time"))
        return "failed: timeout"
    except Exception:  # an adapter bug is not the deployment's fault (as for jobs)
        log.exception("probing %s failed in our code", name)
        return "probe error"
    health.record_probe_success(name, time.time())
    return "ok"


def probe_call(deployment: Deployment, settings: Settings) -> None:
    """The probe's one call: a one-token answer, or for an embedding deployment one embedding."""
    if deployment.model.kind is not ModelKind.EMBEDDING:
        call_once(deployment, PROBE_REQUEST, settings)
        return
    loop = get_call_loop()

    async def go() -> None:
        adapter = await loop.adapter(
            deployment,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=settings.provider_timeout_s,
        )
        await adapter.embed(PROBE_EMBEDDING)

    loop.run(go(), timeout=settings.provider_timeout_s + 5)
