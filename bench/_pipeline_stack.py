"""The throwaway stack the pipeline benchmark runs against, and per-process CPU and memory.

`PipelineStack` is a context manager: a fresh Postgres database migrated by Alembic, a
unique Redis key prefix, the API (`llmqueue api`), a dispatcher worker and provider
worker(s) (`llmqueue worker`), each in its own process, pointed at an emulator the caller
runs. Leaving the `with` block (normally or on error) stops every process it started,
drops the database and deletes the Redis keys under its prefix.

CPU time and peak RSS are read from `/proc/<pid>/stat` and `/proc/<pid>/status`, summed
over each process and its descendants (uvicorn's `--workers` children), so the benchmark
needs no extra dependency.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_ADMIN_URL = os.environ.get("LLMQUEUE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LLMQUEUE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PROVIDER_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "CO_API_KEY", "MISTRAL_API_KEY")


# ---------------------------------------------------------------- /proc accounting


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is fields[0], utime is field 14 of the full line -> [11].
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pids: list[int]) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in pids}


def _status_mb(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of one process, in MiB."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    """Resident set size now (VmRSS) of one process, in MiB."""
    return _status_mb(pid, "VmRSS:")


class CpuMeter:
    """CPU used by a set of process trees between `start()` and `stop()`.

    Descendants are re-discovered at each reading; one that appears in between counts
    from zero."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._start: dict[str, dict[int, float]] = {}
        self.used_s: dict[str, float] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        return {name: tree_cpu(process_tree(pid)) for name, pid in self.roots.items()}

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        end = self._read()
        self.used_s = {
            name: sum(t - self._start.get(name, {}).get(p, 0.0) for p, t in procs.items())
            for name, procs in end.items()
        }
        return self.used_s


# ---------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log_file.close()


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Child:
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by Child.stop
    proc = subprocess.Popen(
        [sys.executable, *args], env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT
    )
    return Child(name, proc, log_path, log_file)


def wait_http(url: str, child: Child, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited during start:\n{child.tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout} s:\n{child.tail()}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """`llmqueue emulator` in its own process."""

    def __init__(self, log_dir: Path, src: Path = ROOT) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in PROVIDER_KEY_VARS}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
        args = ["-m", "llmqueue.cli", "emulator", "--port", str(self.port)]
        self.child = spawn("emulator", args, env, log_dir, src)
        wait_http(f"{self.url}/_emulator/health", self.child)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, latency_ms: float) -> None:
        httpx.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()
        # Unlimited, and saying nothing of limits: with its default headers (10,000 requests a
        # minute) llmqueue would pace to them, while the bare client ignores them.
        scope = {"latency_ms": latency_ms, "rate_limit_headers": False}
        r = httpx.post(f"{self.url}/_emulator/config", json={"scopes": {"*": scope}}, timeout=10)
        r.raise_for_status()

    def stop(self) -> None:
        self.child.stop()


# ---------------------------------------------------------------- the stack


@dataclass
class StackOptions:
    provider_concurrency: int = 200
    provider_workers: int = 1
    dispatch_concurrency: int = 8
    api_workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)


class PipelineStack:
    """Database, Redis prefix, API and workers for one benchmark run. See the module docstring."""

    def __init__(self, emulator_url: str, options: StackOptions, log_dir: Path, src: Path = ROOT) -> None:
        self.options = options
        self.src = src
        self.log_dir = log_dir
        self.run_id = uuid.uuid4().hex[:10]
        self.db_name = f"llmq_bench_{self.run_id}"
        self.prefix = f"llmqbench:{self.run_id}:"
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.database_url = f"{base}/{self.db_name}"
        self.api_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in PROVIDER_KEY_VARS}
        self.env.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": REDIS_URL,
                "CELERY_BROKER_URL": REDIS_URL,
                "LLMQUEUE_REDIS_PREFIX": self.prefix,
                "LLMQUEUE_EMULATOR_URL": emulator_url,
                "LLMQUEUE_EMULATOR_MODE": "always",
                "PYTHONUNBUFFERED": "1",
                **options.extra_env,
            }
        )
        self.api: Child | None = None
        self.dispatcher: Child | None = None
        self.providers: list[Child] = []
        self.key = ""
        self.warmup_key = ""
        self.owner_id = ""
        self._db_created = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def children(self) -> list[Child]:
        return [c for c in (self.api, self.dispatcher, *self.providers) if c is not None]

    def __enter__(self) -> PipelineStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True
        self._migrate_and_make_keys()
        o = self.options
        cli = ["-m", "llmqueue.cli"]
        self.api = self._spawn(
            "api", [*cli, "api", "--port", str(self.api_port), "--workers", str(o.api_workers)]
        )
        self.dispatcher = self._spawn(
            "dispatcher",
            [
                *cli,
                "worker",
                "-Q",
                "dispatch",
                "-c",
                str(o.dispatch_concurrency),
                "--name",
                f"dispatch-{self.run_id}@%h",
            ],
        )
        for i in range(o.provider_workers):
            self.providers.append(
                self._spawn(
                    f"provider{i}",
                    [
                        *cli,
                        "worker",
                        "-Q",
                        "provider.openai",
                        "-c",
                        str(o.provider_concurrency),
                        "--name",
                        f"openai{i}-{self.run_id}@%h",
                    ],
                )
            )
        wait_http(f"{self.api_url}/healthz", self.api, timeout=90)  # a busy machine starts slowly

    def _migrate_and_make_keys(self) -> None:
        # Through the CLI, in child processes: llmqueue's settings are cached per process, each
        # run has its own database, and the code may come from another tree (--src).
        self._cli("migrate")
        self.key = self._cli("keys", "create", "--name", "bench").strip().splitlines()[-1]
        self.warmup_key = self._cli("keys", "create", "--name", "bench-warmup").strip().splitlines()[-1]
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT id FROM api_keys WHERE name = 'bench'").fetchone()
        assert row is not None
        self.owner_id = str(row[0])

    def _spawn(self, name: str, args: list[str]) -> Child:
        return spawn(name, args, self.env, self.log_dir, self.src)

    def _cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "llmqueue.cli", *args],
            env=self.env,
            cwd=self.src,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"llmqueue {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def check_alive(self) -> None:
        for child in self.children():
            if not child.alive():
                raise RuntimeError(f"{child.name} exited (code {child.proc.returncode}):\n{child.tail()}")

    def close(self) -> None:
        for child in self.children():
            try:
                child.stop()
            except Exception as exc:  # keep cleaning up
                print(f"warning: stopping {child.name}: {exc}", file=sys.stderr)
        if self._db_created:
            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self._db_created = False
            except Exception as exc:
                print(f"warning: dropping {self.db_name}: {exc}", file=sys.stderr)
        try:
            client = redis.Redis.from_url(REDIS_URL)
            batch = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for i in range(0, len(batch), 500):
                client.delete(*batch[i : i + 500])
            client.close()
        except Exception as exc:
            print(f"warning: deleting Redis keys {self.prefix}*: {exc}", file=sys.stderr)
