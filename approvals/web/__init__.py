"""The read-only view for approvers and auditors, served by the gateway under /view.

Server-rendered HTML (Jinja2, autoescaped) with inline SVG charts: no script, no CDN, and a
Content-Security-Policy that forbids both. Nothing here changes anything: every route is a
GET except the login form, which only sets the reader's token cookie. Approving, promoting and
aborting stay signed requests (CLI, Slack, Jira).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from approvals.web import pages
from approvals.web.access import COOKIE, LoginNeeded, ViewAccess, ViewOff
from signoff import audit
from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.errors import NotFound, SignoffError
from signoff.models import Phase

HERE = Path(__file__).resolve().parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters["q"] = lambda v: quote(str(v), safe="")


def _when(value: Any) -> str:
    """A timestamp as people read it (UTC, to the second); the full value stays in the export."""
    if value is None or value == "":
        return ""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


TEMPLATES.filters["when"] = _when

Handler = Callable[[Request], Awaitable[Response]]
ClientSource = Callable[[], Awaitable[SignoffClient]]


def view_routes(clients: ClientSource, settings: Settings, access: ViewAccess | None = None) -> list[Route]:
    """The /view routes; `access` decides who may read them (default: from the environment)."""
    access = access or ViewAccess.from_env(settings)

    def guarded(render: Callable[[Request, str], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                viewer = await asyncio.to_thread(access.viewer, request)  # reads files, may fetch a JWKS
            except ViewOff as e:
                return _page("message.html", status_code=404, title="View off", message=str(e))
            except LoginNeeded as e:
                return _page("login.html", status_code=401, title="Log in", message=str(e))
            try:
                return await render(request, viewer)
            except NotFound as e:
                return _page("message.html", status_code=404, title="Not found", message=str(e), viewer=viewer)
            except SignoffError as e:
                return _page("message.html", status_code=503, title="Unavailable", message=str(e), viewer=viewer)

        return handler

    async def releases(request: Request, viewer: str) -> Response:
        filters = {k: request.query_params.get(k, "").strip() for k in pages.FILTERS}
        found = await pages.release_list(await clients(), filters)
        phases = [p.value for p in Phase]
        return _page("releases.html", title="Releases", viewer=viewer, releases=found, filters=filters, phases=phases)

    async def release(request: Request, viewer: str) -> Response:
        context = await pages.release_page(await clients(), settings, request.path_params["release_id"])
        return _page("release.html", title=f"Release {context['r'].release_id}", viewer=viewer, **context)

    async def export(request: Request, viewer: str) -> Response:
        release_id = request.path_params["release_id"]
        document = await asyncio.to_thread(_export, settings, access, release_id)
        body = json.dumps(document, indent=2, sort_keys=True)
        disposition = f'attachment; filename="{quote(release_id, safe="")}.signoff-audit.json"'
        return Response(body, media_type="application/json", headers={**HEADERS, "Content-Disposition": disposition})

    async def runbooks(request: Request, viewer: str) -> Response:
        return _page("runbooks.html", title="Runbook runs", viewer=viewer, runs=await pages.runbook_list(await clients()))

    async def runbook(request: Request, viewer: str) -> Response:
        context = await pages.runbook_page(await clients(), settings, request.path_params["run_id"])
        return _page("runbook.html", title=f"Runbook run {context['run'].run_id}", viewer=viewer, **context)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return _page("login.html", title="Log in", message="")
        form = await request.form()
        token = str(form.get("token") or "").strip()
        response = RedirectResponse("/view/", status_code=303, headers=HEADERS)
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/view")
        return response

    async def logout(_: Request) -> Response:
        response = RedirectResponse("/view/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/view")
        return response

    async def stylesheet(_: Request) -> Response:
        return FileResponse(HERE / "view.css", media_type="text/css", headers=HEADERS)

    return [
        Route("/view", lambda _: RedirectResponse("/view/", status_code=307)),
        Route("/view/", guarded(releases)),
        Route("/view/releases/{release_id}", guarded(release)),
        Route("/view/releases/{release_id}/export", guarded(export)),
        Route("/view/runbooks", guarded(runbooks)),
        Route("/view/runbooks/{run_id}", guarded(runbook)),
        Route("/view/login", login, methods=["GET", "POST"]),
        Route("/view/logout", logout, methods=["POST"]),
        Route("/view/view.css", stylesheet),
    ]


def _export(settings: Settings, access: ViewAccess, release_id: str) -> dict[str, Any]:
    """The same bundle as `signoff audit export`, principals' public keys included."""
    with tempfile.TemporaryDirectory(prefix="signoff-export-") as tmp:
        store = audit.store_from_settings(settings)
        return audit.export(release_id, store, audit.view_trust(settings), Path(tmp) / "export.json", registry=access.trust.current())


def _page(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)
