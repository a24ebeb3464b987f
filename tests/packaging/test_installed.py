"""The package as a user installs it: a wheel built from this checkout, installed in a fresh
virtual environment outside the checkout, runs `llmqueue demo` from an empty folder and
leaves nothing behind; and the README's demo quickstart (`pip install .` then the demo) runs
as written.

Slow by nature (about two minutes: the install resolves every dependency), so it is marked
`packaging`: `make test` runs it, `pytest -m "not packaging"` leaves it out. Dependencies
come through the machine's pip configuration (its index and find-links) and pip's cache,
so a second run downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.quickstart import readme_block, run_block

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted(p.name for p in (ROOT / "llmqueue" / "examples").iterdir())
# What a copy of the checkout leaves out: environments, caches and earlier builds.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".llmqueue"
)
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "CO_API_KEY")
PROVIDER_KEYS += ("MISTRAL_API_KEY", "AZURE_OPENAI_API_KEY")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]


@dataclass
class Installed:
    source: Path  # a copy of the checkout, where the wheel was built
    wheel: Path
    home: Path  # HOME for the user's commands; the virtual environment is home/llmqueue-venv
    tmp: Path  # TMPDIR for the user's commands

    @property
    def venv(self) -> Path:
        return self.home / "llmqueue-venv"

    def env(self) -> dict[str, str]:
        """A user's environment: none of the test run's database, broker, emulator or
        llmqueue settings, no provider key, no virtual environment active."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LLMQUEUE_", "CELERY_", "PYTHON", "VIRTUAL_ENV"))
            and k not in ("DATABASE_URL", "REDIS_URL", *PROVIDER_KEYS)
        }
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if str(ROOT) not in p)
        env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
        env.update(
            HOME=str(self.home), TMPDIR=str(self.tmp), COLUMNS="160", PIP_DISABLE_PIP_VERSION_CHECK="1"
        )
        return env

    def run(self, *args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel, built from a copy of the checkout and installed in a fresh environment."""
    base = tmp_path_factory.mktemp("installed")
    source, dist, home, tmp = base / "source", base / "dist", base / "home", base / "tmp"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    home.mkdir()
    tmp.mkdir()
    setup = Installed(source, dist, home, tmp)
    built = setup.run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", dist, cwd=source)
    assert built.returncode == 0, built.stdout + built.stderr
    (setup.wheel,) = dist.glob("llmqueue-*.whl")
    made = setup.run(sys.executable, "-m", "venv", setup.venv, cwd=home)
    assert made.returncode == 0, made.stderr
    pip = setup.venv / "bin" / "pip"
    done = setup.run(pip, "install", "--no-compile", "--progress-bar", "off", setup.wheel, cwd=home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield setup


def demo_output_is_whole(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "llmqueue demo" in out and "BUILT-IN EMULATOR" in out
    for name in SAMPLES:  # every shipped sample went through the pipeline
        assert name in out, name
    assert "succeeded" in out and "Traceback" not in out


def test_the_wheel_holds_what_the_package_needs(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for needed in (
        "routing/default_catalog.toml",
        "llmqueue/demo_catalog.toml",
        "migrations/alembic.ini",
        "migrations/script.py.mako",
        "migrations/env.py",
        *(f"llmqueue/examples/{name}" for name in SAMPLES),
    ):
        assert needed in names, needed
    migrations = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("migrations/versions/")} == migrations
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_llmqueue_demo_runs_from_an_empty_folder(installed: Installed, tmp_path: Path) -> None:
    where = installed.run(
        installed.venv / "bin" / "python", "-c", "import llmqueue; print(llmqueue.__file__)", cwd=tmp_path
    )
    assert where.stdout.startswith(str(installed.venv)), where  # the installed copy, not the checkout
    empty = tmp_path / "empty"
    empty.mkdir()
    result = installed.run(installed.venv / "bin" / "llmqueue", "demo", cwd=empty, timeout=300)
    demo_output_is_whole(result)
    assert list(empty.iterdir()) == []  # nothing written where it ran
    assert list(installed.tmp.iterdir()) == []  # its temporary folder is gone


def test_a_missing_docs_folder_names_the_option(installed: Installed, tmp_path: Path) -> None:
    result = installed.run(installed.venv / "bin" / "llmqueue", "demo", "--docs", "nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert "--docs" in result.stderr and "nowhere is not a file or directory" in result.stderr
    assert "PATHS" not in result.stderr


def test_the_readme_demo_quickstart_runs_as_written(installed: Installed) -> None:
    # The block makes ~/llmqueue-venv (here the fresh environment, made again in place),
    # installs the checkout into it and runs the demo from a new temporary folder.
    result = run_block(readme_block("demo"), cwd=installed.source, env=installed.env(), timeout=600)
    demo_output_is_whole(result)
    # Only the empty folder the block made with mktemp is left: the demo removed its own.
    assert all(not any(p.iterdir()) for p in installed.tmp.iterdir()), list(installed.tmp.rglob("*"))[:20]
