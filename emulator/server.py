"""The emulator's HTTP server: every wire format's routes plus a control surface.

Control endpoints (not part of any provider's API):
    GET  /_emulator/health           liveness
    GET  /_emulator/config           the fault configuration in force
    POST /_emulator/config           replace it (an `EmulatorConfig` JSON body)
    POST /_emulator/reset            no faults, empty call log
    GET  /_emulator/answered         how many prompts were answered, and those answered more than once
    GET  /_emulator/calls            the call log (filter with ?scope= / ?provider= / ?model= /
                                     ?kind=chat|embed): per call its time `t`, `status`, `kind`,
                                     `tokens` weighed, whether it was `counted` in its scope's
                                     rate-limit window, and `inputs` (embedding calls)

`serve()` runs it in the foreground (`llmqueue emulator`); `EmulatorThread` runs it on a
background thread for the demo and the tests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import ModuleType
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from emulator import (
    anthropic_format,
    batches,
    bedrock_embed,
    bedrock_format,
    cohere_embed,
    cohere_format,
    gemini_embed,
    gemini_format,
    mistral_embed,
    mistral_format,
    openai_embed,
    openai_format,
)
from emulator.core import Emulator, EmulatorConfig

# Each wire-format module exposes add_routes(app, emulator). They are imported, not looked up
# by name, so a missing or broken one fails at import rather than dropping its routes unnoticed.
# No two of them serve the same path, so their order does not matter.
FORMAT_MODULES: tuple[ModuleType, ...] = (
    openai_format,
    openai_embed,
    anthropic_format,
    cohere_format,
    cohere_embed,
    mistral_format,
    mistral_embed,
    gemini_format,
    gemini_embed,
    bedrock_format,
    bedrock_embed,
    batches,
)


def build_app(emu: Emulator | None = None) -> web.Application:
    emu = emu or Emulator()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for module in FORMAT_MODULES:
        module.add_routes(app, emu)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "emulator": True})

    async def get_config(_: web.Request) -> web.Response:
        return web.json_response(emu.config.model_dump())

    async def set_config(request: web.Request) -> web.Response:
        try:
            config = EmulatorConfig.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        emu.configure(config)
        return web.json_response(config.model_dump())

    async def reset(_: web.Request) -> web.Response:
        emu.reset()
        return web.json_response({"ok": True})

    async def calls(request: web.Request) -> web.Response:
        wanted = {k: v for k, v in request.query.items() if k in ("scope", "provider", "model", "kind")}
        rows = [c for c in emu.calls if all(c.get(k) == v for k, v in wanted.items())]
        return web.json_response(rows)

    app.router.add_get("/_emulator/health", health)
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_post("/_emulator/config", set_config)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_get("/_emulator/calls", calls)

    async def answered(_: web.Request) -> web.Response:
        repeated = {digest: n for digest, n in emu.answered.items() if n > 1}
        return web.json_response({"prompts": len(emu.answered), "repeated": repeated})

    app.router.add_get("/_emulator/answered", answered)
    return app


def serve(host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the emulator in the foreground until interrupted."""
    web.run_app(build_app(), host=host, port=port, print=None, access_log=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmulatorThread:
    """The emulator on a daemon thread with its own event loop: `with EmulatorThread() as emu:`."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.emulator = Emulator()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name="llmqueue-emulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(build_app(self.emulator), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        self._loop.run_until_complete(site.start())
        self._started.set()
        self._loop.run_forever()

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the emulator did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
