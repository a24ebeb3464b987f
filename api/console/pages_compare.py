"""The Compare page: one prompt on two to six models side by side, as real jobs.

Each model gets its own job (`POST /v1/jobs` with `stream: true` and that model), and the
browser reads each job's Server-Sent Events (`GET /v1/jobs/{id}/stream`, passed through as
they come) into its column; when a job ends, its column shows the job's latency, tokens and
cost from `GET /v1/jobs/{id}`. Beside them, `POST /v1/route/preview` says, for the same
prompt, which deployment each routing strategy would pick now and why.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from api.console.base import ConsoleRoute, FormViewerDep, ViewerDep, render
from api.console.internal import ApiProblem

router = APIRouter(route_class=ConsoleRoute)

MIN_MODELS, MAX_MODELS = 2, 6
PREVIEW_STRATEGIES = ("cost", "quality", "balanced", "performance", "round_robin")
DEFAULT_PROMPT = "In two sentences: why do queues make systems that call LLM providers more reliable?"


@router.get("/compare")
async def compare_page(request: Request, who: ViewerDep) -> Response:
    models = await who.api.get("/v1/models", {"capability": "streaming"})
    return render(
        request,
        who,
        "compare.html",
        models=models["data"],
        default_prompt=DEFAULT_PROMPT,
        min_models=MIN_MODELS,
        max_models=MAX_MODELS,
    )


def _body(prompt: str, system: str, max_tokens: int | None, temperature: float | None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"messages": messages, "metadata": {"source": "console-compare"}}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    return body


async def _preview(who: Any, body: dict[str, Any], strategy: str) -> dict[str, Any]:
    try:
        found = await who.api.post("/v1/route/preview", json={**body, "strategy": strategy})
    except ApiProblem as exc:
        return {"strategy": strategy, "chosen": None, "error": exc.message, "excluded": []}
    return {**found, "error": None}


@router.post("/compare")
async def run_compare(
    request: Request,
    who: FormViewerDep,
    prompt: Annotated[str, Form(min_length=1)],
    models: Annotated[list[str], Form()],
    system: Annotated[str, Form()] = "",
    max_tokens: Annotated[int | None, Form(ge=1)] = None,
    temperature: Annotated[float | None, Form(ge=0, le=2)] = None,
) -> Response:
    chosen = list(dict.fromkeys(models))  # each once, in the order ticked
    if not MIN_MODELS <= len(chosen) <= MAX_MODELS:
        raise ApiProblem(
            422,
            {
                "message": f"choose {MIN_MODELS} to {MAX_MODELS} models to compare ({len(chosen)} chosen)",
                "param": "models",
            },
        )
    body = _body(prompt, system, max_tokens, temperature)
    submitted = await asyncio.gather(
        *(who.api.post("/v1/jobs", json={**body, "model": m, "stream": True}) for m in chosen),
        return_exceptions=True,
    )
    previews = await asyncio.gather(*(_preview(who, body, s) for s in PREVIEW_STRATEGIES))
    columns = []
    for model, outcome in zip(chosen, submitted, strict=True):
        if isinstance(outcome, ApiProblem):
            columns.append({"model": model, "job_id": None, "error": outcome.message})
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            columns.append({"model": model, "job_id": outcome["id"], "error": None})
    return render(request, who, "_compare_results.html", columns=columns, previews=previews)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, who: ViewerDep) -> Response:
    """The job's Server-Sent Events, from `GET /v1/jobs/{id}/stream`, as they come."""
    return await who.api.stream(f"/v1/jobs/{job_id}/stream")


@router.get("/jobs/{job_id}/card")
async def job_card(request: Request, job_id: str, who: ViewerDep) -> Response:
    """A finished job's figures for its compare column."""
    job = await who.api.get(f"/v1/jobs/{job_id}")
    return render(request, who, "_job_card.html", job=job)
