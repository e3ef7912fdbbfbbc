"""The approvals HTTP gateway: one Starlette app that mounts the Slack and Jira endpoints.

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
from starlette.middleware.base import BaseHTTPMiddleware
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

    async def count_and_limit(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            REQUESTS.labels(request.url.path, "413").inc()
            return JSONResponse({"error": "request body is larger than 1 MiB; nothing was read"}, status_code=413)
        response = await call_next(request)
        REQUESTS.labels(request.url.path, str(response.status_code)).inc()
        return response

    app = Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=count_and_limit)])
    return app


def _not_configured(name: str, env: str) -> Any:
    async def handler(_: Request) -> Response:
        return JSONResponse({"error": f"{name} is not configured on this gateway; set {env}."}, status_code=503)

    return handler
