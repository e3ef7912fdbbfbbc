"""Slack settings, read from the environment only (tokens and secrets never live in files).

| variable                         | meaning                                                          |
|----------------------------------|------------------------------------------------------------------|
| SLACK_BOT_TOKEN                  | bot token (xoxb-…) for the Web API; without it nothing is posted |
| SLACK_SIGNING_SECRET             | verifies every HTTP request from Slack (HTTP mode)               |
| SLACK_APP_TOKEN                  | app-level token (xapp-…) for Socket Mode                         |
| SIGNOFF_SLACK_API_URL            | Web API base URL override (tests point it at the local stub)     |
| SIGNOFF_SLACK_CHANNEL            | default channel for approval requests and notifications          |
| SIGNOFF_SLACK_CHANNEL_<SERVICE>  | per-service channel; SERVICE upper-cased, `-` → `_`              |
|                                  | (`checkout-api` → SIGNOFF_SLACK_CHANNEL_CHECKOUT_API)            |
| SIGNOFF_SLACK_TEAM_ID            | when set, requests from any other workspace are ignored          |
| SIGNOFF_SLACK_APP_ID             | when set, requests for any other app (api_app_id) are ignored    |
| SIGNOFF_SLACK_SUBMIT_TIMEOUT     | seconds a click waits for the release to answer (default 20)     |

Per-service channels are environment variables rather than a mapping file because they are
deployment configuration, like the channel itself, and the env is where the rest lives.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from signoff.errors import ConfigError

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

DEFAULT_API_URL = "https://slack.com/api/"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def service_channel_variable(service: str) -> str:
    """The env variable naming `service`'s channel: checkout-api → SIGNOFF_SLACK_CHANNEL_CHECKOUT_API."""
    return "SIGNOFF_SLACK_CHANNEL_" + re.sub(r"[^A-Z0-9]", "_", service.upper())


@dataclass(frozen=True)
class SlackConfig:
    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str = DEFAULT_API_URL
    default_channel: str | None = None
    service_channels: dict[str, str] = field(default_factory=dict)
    team_id: str | None = None
    app_id: str | None = None
    submit_timeout: float = 20.0

    @classmethod
    def from_env(cls) -> "SlackConfig":
        prefix = "SIGNOFF_SLACK_CHANNEL_"
        services = {k[len(prefix) :]: v for k, v in os.environ.items() if k.startswith(prefix) and v}
        api_url = _env("SIGNOFF_SLACK_API_URL") or DEFAULT_API_URL
        if not api_url.endswith("/"):
            api_url += "/"
        timeout_text = _env("SIGNOFF_SLACK_SUBMIT_TIMEOUT") or "20"
        try:
            timeout = float(timeout_text)
        except ValueError as e:
            raise ConfigError(f"SIGNOFF_SLACK_SUBMIT_TIMEOUT={timeout_text!r} is not a number of seconds; set it to e.g. 20.") from e
        return cls(
            bot_token=_env("SLACK_BOT_TOKEN"),
            signing_secret=_env("SLACK_SIGNING_SECRET"),
            app_token=_env("SLACK_APP_TOKEN"),
            api_url=api_url,
            default_channel=_env("SIGNOFF_SLACK_CHANNEL"),
            service_channels=services,
            team_id=_env("SIGNOFF_SLACK_TEAM_ID"),
            app_id=_env("SIGNOFF_SLACK_APP_ID"),
            submit_timeout=timeout,
        )

    @property
    def enabled(self) -> bool:
        """Slack is in use when a bot token is configured; otherwise signoff stays silent there."""
        return self.bot_token is not None

    def channel_for(self, service: str | None) -> str | None:
        if service:
            key = service_channel_variable(service)[len("SIGNOFF_SLACK_CHANNEL_") :]
            if key in self.service_channels:
                return self.service_channels[key]
        return self.default_channel


def make_web_client(config: SlackConfig, *, timeout: int = 10) -> "AsyncWebClient":
    """The Web API client: bot token, base URL override, and retries for the transient cases.

    Rate limits are honoured (slack_sdk sleeps for the `Retry-After` Slack sends, at most twice);
    a connection error or a 5xx is retried once. Anything beyond that surfaces to the caller,
    which for activities means Temporal's retry policy takes over.
    """
    from slack_sdk.http_retry.builtin_async_handlers import (
        AsyncConnectionErrorRetryHandler,
        AsyncRateLimitErrorRetryHandler,
        AsyncServerErrorRetryHandler,
    )
    from slack_sdk.web.async_client import AsyncWebClient

    return AsyncWebClient(
        token=config.bot_token,
        base_url=config.api_url,
        timeout=timeout,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=1),
        ],
    )


def ensure_session(web: "AsyncWebClient") -> None:
    """Give the client one keep-alive aiohttp session on the running loop.

    Without it slack_sdk opens a new session (and TCP connection) per call, which costs more
    than the rest of a click. Call from inside the loop that will use the client; a session
    from another (or a closed) loop is replaced.
    """
    import asyncio

    import aiohttp

    loop = asyncio.get_running_loop()
    session = web.session
    if session is None or session.closed or getattr(session, "_loop", loop) is not loop:
        web.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=web.timeout))


async def close_session(web: "AsyncWebClient") -> None:
    """Close the keep-alive session made by ensure_session (gateway and worker shutdown)."""
    if web.session is not None and not web.session.closed:
        await web.session.close()
