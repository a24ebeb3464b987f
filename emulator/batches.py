"""Every provider's batch API in the emulator, and the control surface for batches.

`add_routes` (what `emulator/server.py` calls for each route module) registers each batch
module's routes and these control endpoints, which no provider has:

    GET    /_emulator/batches                  every batch with its state (?provider= filters)
    POST   /_emulator/batches/{id}/complete    answer every line now and complete the batch
    POST   /_emulator/batches/{id}/expire      the batch's deadline is now
    DELETE /_emulator/batches                  forget every batch and file

Configuration is `EmulatorConfig.batch` (see `emulator/batch_config.py`).
"""

from __future__ import annotations

from aiohttp import web

from emulator import batch_anthropic, batch_gemini, batch_mistral, batch_openai
from emulator.batch_store import store_for
from emulator.core import Emulator


def add_routes(app: web.Application, emu: Emulator) -> None:
    batch_openai.add_routes(app, emu)
    batch_anthropic.add_routes(app, emu)
    batch_gemini.add_routes(app, emu)
    batch_mistral.add_routes(app, emu)
    store = store_for(emu)

    async def listing(request: web.Request) -> web.Response:
        batches = store.listed(request.query.get("provider"))
        return web.json_response([batch.summary() for batch in batches])

    async def shortcut(request: web.Request) -> web.Response:
        batch = store.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": "no such batch"}, status=404)
        if request.match_info["action"] == "complete":
            batch.finish_now(store.clock())
        else:
            batch.expire_now(store.clock())
        return web.json_response(batch.summary())

    async def forget(_: web.Request) -> web.Response:
        store.batches.clear()
        store.files.clear()
        return web.json_response({"ok": True})

    app.router.add_get("/_emulator/batches", listing)
    app.router.add_delete("/_emulator/batches", forget)
    app.router.add_post("/_emulator/batches/{batch_id}/{action:complete|expire}", shortcut)
