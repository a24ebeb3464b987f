"""What every console page shares: the signed-in viewer, the templates and their filters,
and the route class that turns sign-in, permission and API problems into pages.

A page handler takes `ViewerDep` (or `FormViewerDep` for a state-changing request, which also
checks the CSRF token) and renders a template with `render`. Problems are raised, never
returned: `SignInRequired` becomes a redirect to the sign-in page (an `HX-Redirect` for an
htmx request), `NotAllowed` a 403 page, and an `ApiProblem` from the JSON API a page (or an
htmx fragment) with the API's own message, `param` and status.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.auth import CSRF_FIELD, ConsoleSession, csrf_ok, end_session, read_session
from api.console.internal import ApiProblem, InternalApi
from api.deps import key_for_authorization
from api.errors import ApiError
from jobstore.models import ApiKey, KeyRole

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


class SignInRequired(Exception):
    """No session, an expired one, or its key no longer valid."""


class NotAllowed(Exception):
    """Signed in, but this page is for admin keys (or the CSRF token is wrong)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Viewer:
    """The signed-in key, its session, and the JSON API as that key."""

    key: ApiKey
    session: ConsoleSession
    api: InternalApi

    @property
    def is_admin(self) -> bool:
        return self.key.role == KeyRole.ADMIN.value


def key_for_secret(secret: str) -> ApiKey:
    """The key exactly as the API's own dependency finds it (same cache, same revocation)."""
    return key_for_authorization(f"Bearer {secret}")


async def viewer(request: Request) -> Viewer:
    session = read_session(request)
    if session is None:
        raise SignInRequired
    try:
        key = await run_in_threadpool(key_for_secret, session.secret)
    except ApiError:
        raise SignInRequired from None
    return Viewer(key=key, session=session, api=InternalApi(request.app, session.secret, request))


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def form_viewer(request: Request, who: ViewerDep) -> Viewer:
    """The viewer of a state-changing request whose CSRF token matches its session."""
    form_value = None
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        form_value = value if isinstance(value, str) else None
    if not csrf_ok(who.session, request, form_value):
        raise NotAllowed("the form's security token is missing or stale: reload the page and try again")
    return who


FormViewerDep = Annotated[Viewer, Depends(form_viewer)]


def require_admin(who: Viewer) -> None:
    if not who.is_admin:
        raise NotAllowed(
            f"this page is for admin keys; {who.key.name!r} ({who.key.key_prefix}...) is a member key"
        )


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request, who: Viewer | None, template: str, status_code: int = 200, **context: Any
) -> Response:
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": who, "csrf": who.session.csrf if who else None, "path": request.url.path, **context},
        status_code=status_code,
    )


def _problem_page(request: Request, status: int, title: str, message: str, param: str | None) -> Response:
    template = "_problem.html" if is_htmx(request) else "problem.html"
    response = render(request, None, template, status, title=title, message=message, param=param)
    if is_htmx(request):  # htmx swaps 2xx only by default; say where the message goes
        response.headers["HX-Retarget"] = "#problems"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


class ConsoleRoute(APIRoute):
    """Turns the console's exceptions into pages, for every console route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(request)
            except SignInRequired:
                target = f"/console/login?next={quote(request.url.path)}"
                response: Response
                if is_htmx(request):
                    response = Response(status_code=401, headers={"HX-Redirect": target})
                else:
                    response = RedirectResponse(target, status_code=303)
                end_session(response)
                return response
            except NotAllowed as exc:
                return _problem_page(request, 403, "Not allowed", exc.message, None)
            except ApiProblem as exc:
                if exc.status == 401:
                    raise SignInRequired from None  # unreachable: the viewer was checked first
                return _problem_page(request, exc.status, f"HTTP {exc.status}", exc.message, exc.param)

        return route


# ---------------------------------------------------------------- template filters


def usd(value: Any, digits: int = 6) -> str:
    """Decimal USD as the API sends it (a string), shown to `digits` places, never rounded to 0."""
    if value is None or value == "":
        return "-"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if amount == 0:
        return "$0"
    shown = f"{amount:,.{digits}f}".rstrip("0").rstrip(".")
    return f"${shown}" if Decimal(shown.replace(",", "")) != 0 else f"<${Decimal(1).scaleb(-digits)}"


def ms(value: Any) -> str:
    if value is None:
        return "-"
    number = float(value)
    return f"{number / 1000:.2f} s" if number >= 1000 else f"{number:.0f} ms"


def count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"


def when(value: Any) -> str:
    """An ISO time or a unix time as `YYYY-MM-DD HH:MM:SS` UTC."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.env.filters.update(usd=usd, ms=ms, count=count, pct=pct, when=when)
