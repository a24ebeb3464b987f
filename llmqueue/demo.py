"""`llmqueue demo`: the whole pipeline on one machine, and the story of why it exists.

With no DATABASE_URL it runs embedded: SQLite and kombu's SQLAlchemy transport as the broker
(real Celery messages, no server), in a folder made for the run (`demo_files.demo_home`:
under LLMQUEUE_HOME when set, else a temporary one removed at the end). With
DATABASE_URL / CELERY_BROKER_URL / REDIS_URL set, it uses those. The built-in emulator answers
for every provider whose key is not set (and the demo says so).

It migrates the schema, creates an API key, serves the API on a thread (uvicorn), starts one
real Celery worker process, and submits the sample documents as one batch routed by
`balanced` over the demo catalog (`demo_catalog.toml`, unless LLMQUEUE_CATALOG names another).
The emulator is set up by `demo_story`: it refuses calls past the catalog's rpm with 429s (the
workers must pace under it) and makes one provider fail part-way. A live progress bar, then
which deployment served each document and how routing got it there, the failovers, when the
rate-limited deployments' calls arrived and how many got a 429, and what the batch cost against
other strategies and always-premium.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.panel import Panel

from llmqueue import demo_story as story
from llmqueue.cli_batch import expand, summary, watch
from llmqueue.cli_jobs import console
from llmqueue.demo_files import demo_catalog, demo_home

PROMPT = "{document}\n\nSummarise the document above in two sentences for a busy reader."
# Demo pace: a failing deployment is left after one retry (not four), and its breaker's first
# cooldown outlasts the demo. The user's own values, when set, win.
DEMO_SETTINGS = {"LLMQUEUE_RETRIES_PER_DEPLOYMENT": "1", "LLMQUEUE_BREAKER_COOLDOWN_S": "120"}


def prepare_environment() -> Any:
    """Set the env before any settings are read (LLMQUEUE_HOME is `demo_home`'s): the demo
    catalog unless LLMQUEUE_CATALOG names one, the demo's pace, and the emulator, started."""
    from emulator.server import EmulatorThread

    os.environ.setdefault("LLMQUEUE_CATALOG", str(demo_catalog()))
    for name, value in DEMO_SETTINGS.items():
        os.environ.setdefault(name, value)
    emulator = EmulatorThread().start()
    os.environ["LLMQUEUE_EMULATOR_URL"] = emulator.url
    os.environ.setdefault("LLMQUEUE_EMULATOR_MODE", "auto")
    from core.settings import get_settings

    get_settings.cache_clear()
    return emulator


def announce(emulator: Any) -> None:
    from core.settings import get_settings
    from routing.catalog import get_catalog
    from routing.credentials import emulated, resolve

    settings = get_settings()
    where = (
        "embedded: SQLite and the SQLAlchemy broker under " + str(settings.home.resolve())
        if settings.embedded
        else "the configured DATABASE_URL and broker"
    )
    console.print(f"[bold]llmqueue demo[/bold] — job store and queue: {where}")
    catalog = get_catalog()  # a bad LLMQUEUE_CATALOG stops the demo here, named
    real_ones = sorted(
        name
        for name, deployment in catalog.deployments.items()
        if not emulated(
            resolve(deployment, os.environ).problem,
            emulator_url=emulator.url,
            emulator_mode=settings.emulator_mode,
        )
    )
    real = f" These answer for real (their keys are set): {', '.join(real_ones)}." if real_ones else ""
    console.print(
        Panel(
            f"The BUILT-IN EMULATOR at {emulator.url} answers for every provider whose API key is not "
            f"set: answers below are emulated, costs are computed from real list prices.{real}",
            title="provider emulator",
            style="yellow",
        )
    )


@contextmanager
def api_server() -> Iterator[str]:
    import uvicorn

    from api.main import create_app
    from emulator.server import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start within 20 s")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


class Worker:
    """The demo's worker process, started; `wait_ready` blocks until Celery says it is ready."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.ready = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if " ready." in line:
                self.ready.set()

    def wait_ready(self, timeout_s: float = 90) -> None:
        if not self.ready.wait(timeout_s):
            raise RuntimeError("the worker did not start:\n" + "".join(self.log[-30:]))


@contextmanager
def worker_process(providers: list[str]) -> Iterator[Worker]:
    """One real Celery worker in a child process, stopped at the end: the dispatcher and the
    queues of the catalog's `providers` (the embedded broker polls each queue it serves)."""
    queues = ",".join(["dispatch", "provider_batch", *(f"provider.{p}" for p in providers)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmqueue.cli", "worker", "-Q", queues, "-c", "8", "--loglevel", "INFO"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield Worker(proc)
    finally:
        # Warm shutdown first; the demo's work is done and recorded by now, so a worker still
        # polling its queues after a few seconds gets Celery's cold shutdown, then a kill.
        for stop, wait_s in ((proc.terminate, 4.0), (lambda: proc.send_signal(signal.SIGQUIT), 10.0)):
            stop()
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            proc.kill()
            proc.wait()


def report(
    catalog: Any,
    previews: dict[str, dict[str, Any]],
    served: list[story.Served],
    calls: list[dict[str, Any]],
    final: dict[str, Any],
) -> None:
    """The story, told from what the run recorded."""
    first = (previews[story.STRATEGY].get("chosen") or {}).get("deployment")
    console.print(story.results_table(served, first, console.width))
    console.print(summary(final))
    console.print(story.routing_line(served))
    console.print(story.failover_line(served))
    for line in story.pacing_lines(calls, catalog):
        console.print(line)
    first_choices = {name: model for name, p in previews.items() if (model := story.first_model(p))}
    console.print(story.cost_table(catalog, served, first_choices))


def run_demo(docs: str, latency_ms: float) -> int:
    documents = expand([Path(docs)], param_hint="--docs")
    with demo_home():  # the job store and broker files: removed at the end unless under LLMQUEUE_HOME
        return _run(docs, documents, latency_ms)


def _batch(
    client: Any, emulator_url: str, docs: str, documents: list[Path]
) -> tuple[list[story.Served], dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Preview the routing, submit the batch, watch it to the end, and read back what happened."""
    previews = story.previews(client, documents[0], PROMPT)
    console.print(story.ranking_line(previews[story.STRATEGY]))
    batch = client.submit_documents(
        documents, prompt=PROMPT, strategy=story.STRATEGY, max_tokens=story.MAX_TOKENS
    )
    console.print(
        f"submitted {len(documents)} documents from {docs}/ as batch {batch['id']}, strategy {story.STRATEGY}"
    )
    final = watch(client, batch["id"], console, poll_s=0.25)
    rows = list(client.batch_results(batch["id"]))
    served = [story.Served.of(row, client.job(row["job_id"])) for row in rows]
    calls = httpx.get(f"{emulator_url}/_emulator/calls").json()
    return served, previews, calls, final


def _run(docs: str, documents: list[Path], latency_ms: float) -> int:
    emulator = prepare_environment()
    try:
        announce(emulator)
        from jobstore.db import transaction
        from jobstore.jobs import create_api_key
        from jobstore.migrate import upgrade
        from llmqueue.client import Client
        from routing.catalog import get_catalog

        catalog = get_catalog()
        httpx.post(
            f"{emulator.url}/_emulator/config", json=story.emulator_config(catalog, latency_ms)
        ).raise_for_status()
        for line in story.setup_lines(catalog):
            console.print(line)
        started = time.monotonic()
        # The worker starts first: its imports take longest, and the schema's migration and the
        # API's start overlap them (it touches the job store only once ready).
        with worker_process(catalog.providers()) as worker:
            upgrade()
            with transaction() as session:
                _, secret = create_api_key(session, "demo")
            with api_server() as url, Client(base_url=url, api_key=secret) as client:
                worker.wait_ready()
                served, previews, calls, final = _batch(client, emulator.url, docs, documents)
                report(catalog, previews, served, calls, final)  # before the worker's shutdown
        console.print(f"done in {time.monotonic() - started:.1f} s")
        return 0 if final["status"] == "completed" and final["counts"]["succeeded"] == len(documents) else 1
    finally:
        emulator.stop()
