"""The README's quickstart blocks, as tests run them.

A block is a fenced code block whose info string is `<language> quickstart-<name>`, e.g.

    ```sh quickstart-services
    llmqueue migrate
    ```

`readme_block` returns its text exactly as a reader copies it; `run_block` runs a shell block
with bash (`set -euo pipefail`, so any failing command fails the test), in its own process
group, and ends the whole group afterwards: services a block starts in the background
(`llmqueue api ... &`) stop with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(?P<lang>\w+) quickstart-(?P<name>[\w-]+)\n(?P<body>.*?)^```$", re.M | re.S)


def readme_blocks() -> dict[str, tuple[str, str]]:
    """Every quickstart block: name -> (language, text)."""
    return {m["name"]: (m["lang"], m["body"]) for m in BLOCK.finditer(README.read_text())}


def readme_block(name: str) -> str:
    blocks = readme_blocks()
    assert name in blocks, f"README.md has no ```<lang> quickstart-{name} block (has {sorted(blocks)})"
    return blocks[name][1]


def run_block(
    script: str, *, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a shell block as a reader would paste it; stdout and stderr together in `stdout`.

    Output goes to a file, not a pipe: a service the block left running in the background
    would hold a pipe open after the block ends."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, ended below
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = -1
            proc.terminate()
            proc.wait(10)
        finally:
            end_group(proc.pid)
        log.seek(0)
        output = log.read()
    if code == -1:
        output += f"\n[quickstart block did not finish within {timeout:.0f} s]"
    return subprocess.CompletedProcess(proc.args, code, output, "")


def end_group(pgid: int, grace_s: float = 10) -> None:
    """SIGTERM to the block's process group, then SIGKILL to whatever outlives the grace."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
