"""`POST /jira/webhook`: authenticate a Jira webhook delivery and forward it; decide nothing.

The route is a thin conversion layer, in the spirit of Bolt's HTTP adapters:

1. refuse a missing or unusable ``X-Hub-Signature`` (401) before reading the body;
2. read at most 1 MiB (413 beyond that, before anything is parsed);
3. check ``sha256=<hex HMAC-SHA256 of the raw body>`` with SIGNOFF_JIRA_WEBHOOK_SECRET in constant
   time (401); ``sha1=`` and unknown methods are refused, never downgraded;
4. parse JSON (400); refuse a payload whose ``timestamp`` is outside the replay window
   (SIGNOFF_JIRA_MAX_AGE seconds, default 300: 401), and claim the sha256 of the signed body in a
   SQLite file shared by the gateway's replicas, so a redelivery or a captured body replayed —
   even after a gateway restart — is answered from the first answer, never submitted again
   (the delivery id header is not covered by the HMAC, so the body is the key);
5. hand the payload to the pure `attempt_from_webhook`, attest the attempt with the gateway's
   key (who acted, on which ticket) and submit it through the `SignoffClient` facade. The
   workflow checks the attestation and that the ticket is the gate's own, decides and answers.

Bad input never produces a 5xx. A 503 means signoff itself could not reach Temporal; the
delivery claim is released so Jira's retry of the same delivery is processed normally.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from approvals.deliveries import delivery_log
from approvals.http import BodyTooLarge, read_limited

from approvals.jira.parse import JiraPayloadError, JiraWebhookConfig, Refusal, attempt_from_webhook
from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.directory import load_directory
from signoff.errors import NotFound, Refused, SignoffError
from signoff.models import DirectorySnapshot

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_HEADER = "X-Hub-Signature"
DELIVERY_HEADER = "X-Atlassian-Webhook-Identifier"

ClientFactory = Callable[[], Awaitable[SignoffClient]]



# --------------------------------------------------------------------------- signature


def signature_for(body: bytes, secret: str) -> str:
    """The header value Jira sends for `body`: ``sha256=<hex>``. Tests sign requests with it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_problem(header: str | None, body: bytes | None, secret: str | None) -> str | None:
    """None when the header is a valid sha256 HMAC of `body`; otherwise why it is not.

    With `body=None` only the header's form is checked (used before the body is read).
    """
    if not secret:
        return "this gateway has no SIGNOFF_JIRA_WEBHOOK_SECRET, so it accepts no Jira webhooks; set it to the webhook's secret"
    if not header:
        return f"the request has no {SIGNATURE_HEADER} header; configure the Jira webhook with a secret"
    method, sep, digest = header.strip().partition("=")
    if not sep or not digest:
        return f"{SIGNATURE_HEADER} is not of the form sha256=<hex>"
    if method.strip().lower() != "sha256":
        return f"{SIGNATURE_HEADER} uses method {method.strip()[:20]!r}; only sha256 is accepted"
    if body is None:
        return None
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode()):
        return f"{SIGNATURE_HEADER} does not match the body; check that Jira and signoff share the same webhook secret"
    return None


# --------------------------------------------------------------------------- directory cache


class _DirectoryCache:
    """Re-read the approver directory when the file changes; membership edits apply at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._snapshot: DirectorySnapshot | None = None

    def get(self) -> DirectorySnapshot:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._snapshot is None or stamp != self._stamp:
            self._snapshot = load_directory(self.path)
            self._stamp = stamp
        return self._snapshot


# --------------------------------------------------------------------------- the route


def jira_routes(
    client_factory: ClientFactory,
    *,
    settings: Settings,
    directory_path: Path,
    config: JiraWebhookConfig | None = None,
) -> list[Route]:
    """The routes the gateway mounts for Jira: ``POST /jira/webhook``.

    `config` defaults to SIGNOFF_JIRA_* from `settings.extra` and the environment.
    """
    import os

    from signoff.trust.attest import GatewaySigner

    cfg = config or JiraWebhookConfig.from_env(settings.extra)
    deliveries = delivery_log(settings.state_dir, "jira", database_url=settings.database_url)
    directory = _DirectoryCache(Path(directory_path))
    signer = GatewaySigner.from_settings(settings)
    max_age = float(settings.extra.get("SIGNOFF_JIRA_MAX_AGE") or os.environ.get("SIGNOFF_JIRA_MAX_AGE") or 300)

    async def webhook(request: Request) -> JSONResponse:
        problem = signature_problem(request.headers.get(SIGNATURE_HEADER), None, cfg.webhook_secret)
        if problem:
            return _answer(401, "unauthorized", problem)
        try:
            body = await read_limited(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return _answer(413, "refused", f"the body is larger than {MAX_BODY_BYTES} bytes; Jira webhooks are far smaller")
        except ClientDisconnect:
            return _answer(400, "invalid", "the client went away before the body was read")
        problem = signature_problem(request.headers.get(SIGNATURE_HEADER), body, cfg.webhook_secret)
        if problem:
            return _answer(401, "unauthorized", problem)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _answer(400, "invalid", "the body is not JSON; send Jira's webhook JSON unchanged")
        stamp = payload.get("timestamp") if isinstance(payload, dict) else None
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
            return _answer(400, "invalid", "the webhook has no numeric timestamp; send Jira's webhook JSON unchanged")
        age = time.time() - stamp / 1000
        if abs(age) > max_age:
            return _answer(401, "unauthorized", f"the webhook was sent {age:.0f} s ago, outside the {max_age:.0f} s window; a replayed or delayed delivery is refused")

        delivery_id = (request.headers.get(DELIVERY_HEADER) or "").strip()[:200] or None
        key = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed, status, answer = await asyncio.to_thread(deliveries.claim, key)
        if not claimed:
            if answer is None:
                return _answer(202, "duplicate", "this delivery is already being processed", delivery=delivery_id)
            return JSONResponse({**answer, "duplicate": True}, status_code=status or 200)
        status, answer = await _process(payload, delivery_id, key)
        if status >= 500 or status == 400:
            await asyncio.to_thread(deliveries.release, key)
        else:
            await asyncio.to_thread(deliveries.complete, key, status, answer)
        return JSONResponse(answer, status_code=status)

    async def _process(payload: Any, delivery_id: str | None, body_key: str) -> tuple[int, dict[str, Any]]:
        try:
            snapshot = directory.get()
        except (SignoffError, OSError) as e:
            log.error("jira webhook: approver directory unavailable: %s", e)
            return 503, _body("error", str(e) if isinstance(e, SignoffError) else "the approver directory cannot be read; check SIGNOFF_DIRECTORY")
        try:
            outcome = attempt_from_webhook(payload, directory=snapshot, config=cfg, delivery_id=delivery_id)
        except JiraPayloadError as e:
            return 400, _body("invalid", str(e))
        if isinstance(outcome, Refusal):
            log.info("jira webhook %s: %s (%s)", delivery_id, outcome.status, outcome.reason)
            return 200, _body(outcome.status, outcome.reason)
        issue = payload.get("issue") if isinstance(payload.get("issue"), dict) else {}
        actor = payload.get("user") if payload.get("webhookEvent") == "jira:issue_updated" else (payload.get("comment") or {}).get("author")
        try:
            outcome = signer.attest_attempt(
                outcome,
                {
                    "ticket": issue.get("key"),
                    "account": (actor or {}).get("accountId") if isinstance(actor, dict) else None,
                    "request_id": delivery_id,
                    "webhook": body_key,
                },
            )
            client = await client_factory()
            result = await client.submit_approval(outcome)
        except (NotFound, Refused) as e:
            return 200, _body("refused", str(e), release_id=outcome.release_id, identity=outcome.identity)
        except SignoffError as e:
            log.warning("jira webhook %s: could not submit: %s", delivery_id, e)
            return 503, _body("error", str(e))
        return 200, _body(
            "submitted",
            result.reason,
            accepted=result.accepted,
            release_id=outcome.release_id,
            gate=outcome.gate,
            identity=outcome.identity,
            decision=outcome.decision,
            progress=result.gate.progress if result.gate else "",
        )

    return [Route("/jira/webhook", webhook, methods=["POST"])]


def _body(status: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, **extra}


def _answer(code: int, status: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse(_body(status, reason, **extra), status_code=code)
