"""A local stand-in for Slack's Web API, in the spirit of bolt-python's own test server.

api.slack.com is not reachable from a test machine, so tests point `AsyncWebClient(base_url=...)`
(and `SIGNOFF_SLACK_API_URL`) at this server. It speaks the real wire format — the same
method paths (`/api/chat.postMessage`), form, query or JSON bodies, and the JSON shapes Slack
answers with — and it records every request (path, parsed body, headers) so a test can assert
what signoff posted. It can be told to fail the next calls of a method with a 5xx or a 429
carrying `Retry-After`, which is how the retry and rate-limit paths are tested.

It also accepts POSTs on `/response/...`, standing in for the `response_url` Slack hands to slash
commands and interactions.

Inbound requests (Slack → signoff) are signed with `signed_headers`, which uses
`slack_sdk.signature.SignatureVerifier.generate_signature` exactly as Slack signs them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0SIGNOFF"
APP_ID = "A0SIGNOFF"
BOT_USER_ID = "U0BOT"


@dataclass
class RecordedRequest:
    """One request the stub received: which API method, the parsed body and the headers."""

    http_method: str
    path: str
    api_method: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    response: dict[str, Any] | None = None


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: int | None = None
    error: str | None = None


def signed_headers(signing_secret: str, body: str, *, timestamp: int | None = None, content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    """Headers Slack would send with `body`: X-Slack-Request-Timestamp and X-Slack-Signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    return {
        "content-type": content_type,
        "x-slack-request-timestamp": ts,
        "x-slack-signature": signature,
    }


class SlackStub:
    """Start with `stub = SlackStub(); stub.start()`, use `stub.api_url`, `stub.stop()` when done."""

    def __init__(self, *, users: dict[str, dict[str, Any]] | None = None, team_id: str = TEAM_ID) -> None:
        self.team_id = team_id
        # Slack user id -> {"email": ..., "name": ..., "is_bot": ..., "deleted": ...}
        self.users: dict[str, dict[str, Any]] = dict(users or {})
        self.requests: list[RecordedRequest] = []
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "SlackStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                stub._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                stub._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """What AsyncWebClient(base_url=...) and SIGNOFF_SLACK_API_URL take (trailing slash included)."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.base_url}/response/{name}"

    # ------------------------------------------------------------------ test controls

    def fail_next(self, api_method: str, *, status: int = 500, count: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `count` calls of `api_method` with `status` (429 carries Retry-After)."""
        with self._lock:
            self._faults[api_method] = _Fault(status=status, remaining=count, retry_after=retry_after)

    def error_next(self, api_method: str, error: str, *, count: int = 1) -> None:
        """Answer the next `count` calls with HTTP 200 and {"ok": false, "error": error}, as Slack does."""
        with self._lock:
            self._faults[api_method] = _Fault(status=200, remaining=count, error=error)

    def calls(self, api_method: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.api_method == api_method]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_for(self, api_method: str, count: int = 1, *, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block (bounded) until at least `count` calls of `api_method` arrived; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.requests if r.api_method == api_method]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the Slack stub saw {len(found)} {api_method} call(s) within {timeout}s, expected {count}")
                self._cond.wait(timeout=left)

    async def until(self, api_method: str, count: int = 1, *, timeout: float = 10.0) -> list[RecordedRequest]:
        """`wait_for` for async tests: polls without blocking the event loop the app runs on."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            found = self.calls(api_method)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"the Slack stub saw {len(found)} {api_method} call(s) within {timeout}s, expected {count}")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ request handling

    def _handle(self, h: BaseHTTPRequestHandler, http_method: str) -> None:
        parsed = urlparse(h.path)
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length).decode("utf-8") if length else ""
        body: dict[str, Any] = dict(parse_qsl(parsed.query))
        ctype = (h.headers.get("content-type") or "").lower()
        if raw:
            if "json" in ctype:
                body.update(json.loads(raw))
            else:
                body.update(dict(parse_qsl(raw)))
        if parsed.path.startswith("/api/"):
            api_method = parsed.path[len("/api/") :]
        elif parsed.path.startswith("/response/"):
            api_method = "response_url"
        else:
            api_method = parsed.path
        headers = {k.lower(): v for k, v in h.headers.items()}
        # Bearer token may also come as a form field (legacy); Slack accepts both.
        token = headers.get("authorization", "").removeprefix("Bearer ") or body.get("token", "")
        record = RecordedRequest(http_method, parsed.path, api_method, body, headers)
        with self._lock:
            fault = self._faults.get(api_method)
            if fault is not None and fault.remaining > 0:
                fault.remaining -= 1
            else:
                fault = None
        status, extra = 200, {}
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            status = fault.status
            record.response = {"ok": False, "error": fault.error or ("ratelimited" if fault.status == 429 else "internal_error")}
        elif api_method == "response_url":
            record.response = {"text": "ok"}
        elif api_method != "api.test" and not token:
            record.response = {"ok": False, "error": "not_authed"}
        else:
            record.response = self._answer(api_method, body)
        # recorded once answered, so a test that sees the request also sees the response
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()
        if api_method == "response_url" and fault is None:
            self._send_text(h, 200, "ok")
        else:
            self._send(h, status, record.response, extra)

    def _answer(self, api_method: str, body: dict[str, Any]) -> dict[str, Any]:
        if api_method == "auth.test":
            return {
                "ok": True,
                "url": "https://signoff-test.slack.com/",
                "team": "Signoff Test",
                "user": "signoff",
                "team_id": self.team_id,
                "user_id": BOT_USER_ID,
                "bot_id": "B0BOT",
                "app_id": APP_ID,
                "is_enterprise_install": False,
            }
        if api_method == "chat.postMessage":
            ts = f"{1_700_000_000 + next(self._ts)}.000100"
            channel = body.get("channel", "")
            return {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {
                    "type": "message",
                    "user": BOT_USER_ID,
                    "bot_id": "B0BOT",
                    "text": body.get("text", ""),
                    "ts": ts,
                    "thread_ts": body.get("thread_ts"),
                    "blocks": body.get("blocks", []),
                    "metadata": body.get("metadata"),
                },
            }
        if api_method == "chat.update":
            return {
                "ok": True,
                "channel": body.get("channel"),
                "ts": body.get("ts"),
                "text": body.get("text", ""),
                "message": {"type": "message", "user": BOT_USER_ID, "text": body.get("text", ""), "blocks": body.get("blocks", [])},
            }
        if api_method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{1_700_000_000 + next(self._ts)}.000200"}
        if api_method == "users.info":
            uid = body.get("user", "")
            person = self.users.get(uid)
            if person is None:
                return {"ok": False, "error": "user_not_found"}
            return {
                "ok": True,
                "user": {
                    "id": uid,
                    "team_id": person.get("team_id", self.team_id),
                    "name": person.get("name", uid.lower()),
                    "deleted": bool(person.get("deleted", False)),
                    "is_bot": bool(person.get("is_bot", False)),
                    "is_restricted": bool(person.get("is_restricted", False)),
                    "is_ultra_restricted": bool(person.get("is_ultra_restricted", False)),
                    "profile": {
                        "real_name": person.get("name", ""),
                        "display_name": person.get("name", ""),
                        **({"email": person["email"]} if person.get("email") else {}),
                    },
                },
            }
        if api_method == "views.open":
            view = body.get("view")
            if isinstance(view, str):
                view = json.loads(view)
            return {"ok": True, "view": {"id": f"V{next(self._ts):08d}", "team_id": self.team_id, **(view or {})}}
        return {"ok": False, "error": "unknown_method"}

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _send_text(h: BaseHTTPRequestHandler, status: int, text: str) -> None:
        data = text.encode()
        h.send_response(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
