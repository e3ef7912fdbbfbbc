"""A local stand-in for the Jira REST API, spoken to by the real `jira` library in tests.

Jira Cloud is not reachable from a test machine, so this small HTTP server (loopback, port 0,
one thread) answers the endpoints signoff uses with Jira's JSON shapes: serverInfo, myself,
field, create issue, get issue, search (``/search`` for Server/Data Center and ``/search/jql``
for Cloud), transitions (list and perform) and comments (list and add). It checks basic auth,
records every request so tests can assert exactly what was sent, can be switched "down" (503)
to exercise retries, and builds the webhook payloads Jira would send when a person transitions
or comments on a ticket (`transition_webhook`, `comment_webhook`).

It is a stub, not a Jira: JQL support is limited to ``field = "value"`` clauses joined by AND
(plus an ignored ORDER BY), which is all signoff sends.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

STATUSES = ["To Do", "In Progress", "Approved", "Declined", "Done"]
_JQL_CLAUSE = re.compile(r'^\s*(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[\w.@:-]+)\s*$')


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class StubIssue:
    id: str
    key: str
    fields: dict[str, Any]
    status: str = "To Do"
    comments: list[dict[str, Any]] = field(default_factory=list)


class JiraStub:
    """Start with `with JiraStub() as jira:`; `jira.url` is the server for `JIRA(server=...)`."""

    def __init__(
        self,
        *,
        user: str = "signoff-bot@example.com",
        token: str = "stub-token",
        project: str = "REL",
        deployment: str = "Cloud",
        bot_account_id: str = "jira-bot-0000",
    ) -> None:
        self.user = user
        self.token = token
        self.project = project
        self.deployment = deployment
        self.bot_account_id = bot_account_id
        self.down = False
        self.requests: list[Recorded] = []
        self.issues: dict[str, StubIssue] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "JiraStub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ assertions helpers

    def requests_to(self, method: str, path_pattern: str) -> list[Recorded]:
        rx = re.compile(path_pattern)
        with self._lock:
            return [r for r in self.requests if r.method == method and rx.fullmatch(r.path)]

    def issues_with_label(self, label: str) -> list[StubIssue]:
        with self._lock:
            return [i for i in self.issues.values() if label in i.fields.get("labels", [])]

    # ------------------------------------------------------------------ webhook payloads

    def transition_webhook(self, key: str, to_status: str, *, account_id: str) -> dict[str, Any]:
        """Move `key` to `to_status` as a person and return the `jira:issue_updated` payload."""
        with self._lock:
            issue = self.issues[key]
            before = issue.status
            issue.status = to_status
            raw = self._issue_json(issue)
        return {
            "timestamp": _millis(),
            "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic",
            "user": _user(account_id),
            "issue": raw,
            "changelog": {
                "id": str(uuid.uuid4().int % 10**6),
                "items": [
                    {
                        "field": "status",
                        "fieldtype": "jira",
                        "fieldId": "status",
                        "from": str(STATUSES.index(before) + 1) if before in STATUSES else "1",
                        "fromString": before,
                        "to": str(STATUSES.index(to_status) + 1) if to_status in STATUSES else "99",
                        "toString": to_status,
                    }
                ],
            },
        }

    def comment_webhook(self, key: str, body: str, *, account_id: str) -> dict[str, Any]:
        """Add a comment to `key` as a person and return the `comment_created` payload."""
        with self._lock:
            issue = self.issues[key]
            comment = self._new_comment(issue, body, account_id)
            raw = self._issue_json(issue)
        return {"timestamp": _millis(), "webhookEvent": "comment_created", "comment": comment, "issue": raw}

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def _serve(self) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with stub._lock:
                    stub.requests.append(
                        Recorded(self.command, parsed.path, parse_qs(parsed.query), body, {k: v for k, v in self.headers.items()})
                    )
                if stub.down:
                    return self._send(503, {"errorMessages": ["Service Unavailable (stub switched down)"]})
                if not stub._authorised(self.headers.get("Authorization")):
                    return self._send(401, {"errorMessages": ["You are not authenticated."]})
                try:
                    code, payload = stub._route(self.command, parsed.path, parse_qs(parsed.query), body)
                except KeyError as e:
                    code, payload = 404, {"errorMessages": [f"Issue does not exist or you do not have permission to see it: {e}"]}
                except ValueError as e:
                    code, payload = 400, {"errorMessages": [str(e)], "errors": {}}
                self._send(code, payload)

            def _send(self, code: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve
            do_DELETE = _serve

        return Handler

    def _authorised(self, header: str | None) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        return header == expected

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        m = re.fullmatch(r"/rest/api/(?:2|3|latest)/(.*)", path)
        if not m:
            return 404, {"errorMessages": [f"no such endpoint {path}"]}
        rest = m.group(1)
        if method == "GET" and rest == "serverInfo":
            return 200, {
                "baseUrl": self.url,
                "version": "1001.0.0-SNAPSHOT" if self.deployment == "Cloud" else "9.12.0",
                "versionNumbers": [1001, 0, 0] if self.deployment == "Cloud" else [9, 12, 0],
                "deploymentType": self.deployment,
                "buildNumber": 100000,
                "serverTitle": "Jira stub",
            }
        if method == "GET" and rest == "myself":
            return 200, {**_user(self.bot_account_id), "emailAddress": self.user, "active": True}
        if method == "GET" and rest == "field":
            return 200, [
                {"id": f, "name": f.capitalize(), "custom": False, "clauseNames": [f], "schema": {"type": "string"}}
                for f in ("summary", "description", "labels", "status", "project", "issuetype", "comment", "created")
            ]
        if rest in ("search", "search/jql"):
            params: dict[str, Any] = body if (method == "POST" and isinstance(body, dict)) else {k: v[0] for k, v in query.items()}
            return 200, self._search(str(params.get("jql", "")), cloud=rest == "search/jql")
        if method == "POST" and rest == "issue":
            return self._create(body)
        im = re.fullmatch(r"issue/([^/]+)(/transitions|/comment)?", rest)
        if im:
            with self._lock:
                issue = self._find(im.group(1))
                sub = im.group(2)
                if sub is None and method == "GET":
                    return 200, self._issue_json(issue)
                if sub == "/transitions" and method == "GET":
                    return 200, {"expand": "transitions", "transitions": _transitions(issue.status)}
                if sub == "/transitions" and method == "POST":
                    return self._transition(issue, body)
                if sub == "/comment" and method == "GET":
                    return 200, {"startAt": 0, "maxResults": len(issue.comments), "total": len(issue.comments), "comments": issue.comments}
                if sub == "/comment" and method == "POST":
                    text = body.get("body") if isinstance(body, dict) else None
                    if not isinstance(text, str) or not text:
                        return 400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}}
                    return 201, self._new_comment(issue, text, self.bot_account_id)
        return 404, {"errorMessages": [f"no such endpoint {method} {path}"]}

    # ------------------------------------------------------------------ behaviour

    def _find(self, key_or_id: str) -> StubIssue:
        for issue in self.issues.values():
            if issue.key == key_or_id or issue.id == key_or_id:
                return issue
        raise KeyError(key_or_id)

    def _create(self, body: Any) -> tuple[int, Any]:
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return 400, {"errorMessages": ["fields are required"], "errors": {}}
        errors: dict[str, str] = {}
        if (fields.get("project") or {}).get("key") != self.project:
            errors["project"] = "valid project is required"
        if not (fields.get("issuetype") or {}).get("name"):
            errors["issuetype"] = "issue type is required"
        if not fields.get("summary"):
            errors["summary"] = "You must specify a summary of the issue."
        elif len(fields["summary"]) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
        for label in fields.get("labels", []):
            if not isinstance(label, str) or not label or " " in label or len(label) > 255:
                errors["labels"] = "The label can't contain spaces and must be 1-255 characters."
        if errors:
            return 400, {"errorMessages": [], "errors": errors}
        with self._lock:
            number = len(self.issues) + 1
            issue = StubIssue(id=str(10000 + number), key=f"{self.project}-{number}", fields=dict(fields))
            self.issues[issue.key] = issue
        return 201, {"id": issue.id, "key": issue.key, "self": f"{self.url}/rest/api/2/issue/{issue.id}"}

    def _transition(self, issue: StubIssue, body: Any) -> tuple[int, Any]:
        tid = str((body or {}).get("transition", {}).get("id", ""))
        for t in _transitions(issue.status):
            if t["id"] == tid:
                issue.status = t["to"]["name"]
                comment = (((body or {}).get("update") or {}).get("comment") or [{}])[0].get("add", {}).get("body")
                if comment:
                    self._new_comment(issue, comment, self.bot_account_id)
                return 204, None
        return 400, {"errorMessages": [f"Transition id '{tid}' is not valid for this issue."], "errors": {}}

    def _new_comment(self, issue: StubIssue, body: str, account_id: str) -> dict[str, Any]:
        now = _now()
        comment = {
            "id": str(20000 + sum(len(i.comments) for i in self.issues.values()) + 1),
            "self": f"{self.url}/rest/api/2/issue/{issue.id}/comment",
            "author": _user(account_id),
            "updateAuthor": _user(account_id),
            "body": body,
            "created": now,
            "updated": now,
        }
        issue.comments.append(comment)
        return comment

    def _search(self, jql: str, *, cloud: bool) -> dict[str, Any]:
        where = re.split(r"\s+ORDER\s+BY\s+", jql, flags=re.IGNORECASE)[0]
        clauses: list[tuple[str, str]] = []
        for part in re.split(r"\s+AND\s+", where.strip(), flags=re.IGNORECASE) if where.strip() else []:
            m = _JQL_CLAUSE.match(part)
            if not m:
                raise ValueError(f"the Jira stub cannot parse JQL clause {part!r}")
            value = m.group(2)
            if value.startswith('"'):
                value = json.loads(value)
            clauses.append((m.group(1).lower(), value))
        with self._lock:
            found = [self._issue_json(i) for i in self.issues.values() if all(_matches(i, f, v) for f, v in clauses)]
        if cloud:
            return {"issues": found, "isLast": True}
        return {"expand": "schema,names", "startAt": 0, "maxResults": 50, "total": len(found), "issues": found}

    def _issue_json(self, issue: StubIssue) -> dict[str, Any]:
        fields = dict(issue.fields)
        fields["status"] = {"name": issue.status, "id": str(STATUSES.index(issue.status) + 1) if issue.status in STATUSES else "99"}
        fields.setdefault("labels", [])
        fields["comment"] = {"comments": list(issue.comments), "total": len(issue.comments), "startAt": 0, "maxResults": len(issue.comments)}
        return {"id": issue.id, "key": issue.key, "self": f"{self.url}/rest/api/2/issue/{issue.id}", "fields": fields}


def _transitions(current: str) -> list[dict[str, Any]]:
    return [
        {"id": str(11 + i), "name": name, "to": {"name": name, "id": str(i + 1)}, "hasScreen": False}
        for i, name in enumerate(STATUSES)
        if name != current
    ]


def _matches(issue: StubIssue, field_name: str, value: str) -> bool:
    if field_name == "project":
        return value in (issue.fields.get("project", {}).get("key"), issue.key.split("-")[0])
    if field_name == "labels":
        return value in issue.fields.get("labels", [])
    if field_name == "status":
        return issue.status.lower() == value.lower()
    if field_name == "key":
        return issue.key == value
    raise ValueError(f"the Jira stub cannot search on field {field_name!r}")


def _user(account_id: str) -> dict[str, Any]:
    return {"accountId": account_id, "displayName": account_id, "accountType": "atlassian", "active": True}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _millis() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)
