"""Sign in and out: the sign-in form, its check of the key against the API, sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.auth import (
    end_session,
    login_token,
    login_token_ok,
    safe_next,
    set_login_cookie,
    start_session,
)
from api.console.base import ConsoleRoute, FormViewerDep, key_for_secret, render
from api.errors import ApiError

router = APIRouter(route_class=ConsoleRoute)


def _login_page(
    request: Request, status: int = 200, error: str | None = None, next_url: str = ""
) -> Response:
    token = login_token(request)
    response = render(request, None, "login.html", status, error=error, next_url=next_url, token=token)
    set_login_cookie(response, request, token)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=500)],
    login_token_value: Annotated[str | None, Form(alias="login_token")] = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    if not login_token_ok(request, login_token_value):
        return _login_page(request, 403, "The sign-in form expired; try again.", safe_next(next))
    secret = api_key.strip()
    try:
        await run_in_threadpool(key_for_secret, secret)
    except ApiError as exc:
        return _login_page(request, 401, f"Not signed in: {exc.message}.", safe_next(next))
    response = RedirectResponse(safe_next(next), status_code=303)
    start_session(response, request, secret)
    return response


@router.post("/logout")
def logout(who: FormViewerDep) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    end_session(response)
    return response
