"""The approvals HTTP gateway: one Starlette app that mounts the Slack and Jira endpoints and the
read-only view (/view).

Nothing here decides anything: each channel authenticates its request, maps the person to a
canonical identity, and hands the attempt to the workflow through the client facade.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from signoff.client import SignoffClient
from signoff.config import Settings

log = logging.getLogger("signoff.gateway")

REQUESTS = Counter("signoff_gateway_requests_total", "Gateway requests by route and status", ["route", "status"])
MAX_BODY = 1024 * 1024


class ClientFactory:
    """Connects to Temporal lazily and once; a gateway starts even while Temporal is down."""

    def __init__(self, settings: Settings, client: SignoffClient | None = None) -> None:
        self.settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def __call__(self) -> SignoffClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await SignoffClient.connect(self.settings)
        return self._client


async def healthz(_: Request) -> Response:
    return JSONResponse({"ok": True})


async def metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, *, client: SignoffClient | None = None, slack_web_client: Any = None) -> Starlette:
    factory = ClientFactory(settings, client)
    routes: list[Any] = [Route("/healthz", healthz), Route("/metrics", metrics)]

    if os.environ.get("SLACK_SIGNING_SECRET"):
        from approvals.slack.app import build_slack_app, slack_routes

        slack_app = build_slack_app(factory, settings=settings, directory_path=settings.directory_path, web_client=slack_web_client)
        routes.extend(slack_routes(slack_app))
    else:
        routes.append(Route("/slack/events", _not_configured("Slack", "SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN"), methods=["POST"]))

    if os.environ.get("SIGNOFF_JIRA_WEBHOOK_SECRET"):
        from approvals.jira.webhook import jira_routes

        routes.extend(jira_routes(factory, settings=settings, directory_path=settings.directory_path))
    else:
        routes.append(Route("/jira/webhook", _not_configured("Jira", "SIGNOFF_JIRA_WEBHOOK_SECRET"), methods=["POST"]))

    from approvals.web import view_routes

    routes.extend(view_routes(factory, settings))  # read-only; off in production without a way to log in
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit, limit=MAX_BODY)])


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over `limit` bytes (413) before any route parses
    them — by Content-Length when given, and by counting chunks when it is not."""

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(path, send)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Any:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _TooLarge()
            return message

        status: dict[str, int] = {}

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, counting_send)
        except _TooLarge:
            if "code" not in status:
                await self._refuse(path, send)
            return
        REQUESTS.labels(path, str(status.get("code", 0))).inc()

    @staticmethod
    async def _refuse(path: str, send: Any) -> None:
        REQUESTS.labels(path, "413").inc()
        response = JSONResponse({"error": "request body is larger than 1 MiB; nothing was read"}, status_code=413)
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}


def _not_configured(name: str, env: str) -> Any:
    async def handler(_: Request) -> Response:
        return JSONResponse({"error": f"{name} is not configured on this gateway; set {env}."}, status_code=503)

    return handler
