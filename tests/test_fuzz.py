"""Hostile input (issue 10): the gateway's Slack and Jira routes and the release-file loader.

The gateway is the only part of signoff that strangers can reach, and the release-file loader
reads whatever an agent hands it. Both must answer garbage with a clear 4xx (or Slack's
protocol-mandated 200) or a one-sentence `ReleaseFileError`; never a 5xx, a traceback, or an
approval submitted on behalf of an unauthenticated request.

The gateway is the real `approvals.gateway.create_app` with both channels configured; only the
SignoffClient it hands attempts to is replaced by a recorder (so the test can prove no Update
was ever asked for), and Slack's Web API is the local stub. Hypothesis drives the inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from slack_sdk.web.async_client import AsyncWebClient
from starlette.testclient import TestClient

from approvals.gateway import create_app
from approvals.jira.webhook import signature_for
from signoff.config import Settings
from signoff.errors import NotFound, ReleaseFileError, SignoffError
from signoff.models import ApprovalAttempt, ApprovalResult, ReleaseStatus
from signoff.releasefile import load_release_file, parse_release
from tests.stubs.slack_stub import APP_ID, TEAM_ID, SlackStub, signed_headers

SLACK_SECRET = "fuzz-slack-signing-secret-0123456789"
JIRA_SECRET = "fuzz-jira-webhook-secret-0123456789"
DIRECTORY_EMAILS = {"alice@example.com", "bob@example.com", "carol@example.com", "dana@example.com"}
ONE_MIB = 1024 * 1024

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


class RecordingClient:
    """Stands in for SignoffClient behind the gateway: records every Update it is asked for and
    refuses it, so nothing anywhere can be approved by this test."""

    def __init__(self) -> None:
        self.attempts: list[ApprovalAttempt] = []

    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        self.attempts.append(attempt)
        return ApprovalResult(accepted=False, reason="the fuzz recorder never accepts")

    async def status(self, release_id: str, **_: Any) -> ReleaseStatus:
        raise NotFound(f"no release {release_id} exists; check the id with `signoff release list`.")

    async def list_releases(self, **_: Any) -> list[ReleaseStatus]:
        return []

    async def promote(self, release_id: str, **_: Any) -> dict[str, Any]:
        raise NotFound(f"no running release {release_id}; check the id with `signoff release list`.")

    async def abort(self, release_id: str, **_: Any) -> dict[str, Any]:
        raise NotFound(f"no running release {release_id}; check the id with `signoff release list`.")


class ErrorLogs(logging.Handler):
    """Collects ERROR records (bolt logs a listener that crashed after its ack this way)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[TestClient, RecordingClient, ErrorLogs]]:
    stub = SlackStub().start()
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK_SECRET)
    monkeypatch.setenv("SIGNOFF_JIRA_WEBHOOK_SECRET", JIRA_SECRET)
    monkeypatch.setenv("SIGNOFF_SLACK_TEAM_ID", TEAM_ID)
    monkeypatch.setenv("SIGNOFF_SLACK_SUBMIT_TIMEOUT", "2")
    recorder = RecordingClient()
    errors = ErrorLogs()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        web = AsyncWebClient(token="xoxb-fuzz", base_url=stub.api_url)
        app = create_app(Settings.from_env(), client=recorder, slack_web_client=web)  # type: ignore[arg-type]
        with TestClient(app, raise_server_exceptions=False) as http:
            yield http, recorder, errors
    finally:
        root.removeHandler(errors)
        stub.stop()


# --------------------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=5),
    max_leaves=30,
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
garbage = st.binary(max_size=2000)


@st.composite
def slack_block_actions(draw: st.DrawFn) -> str:
    """A block_actions payload of Slack's shape with hostile values in every field we read."""
    value = draw(
        st.one_of(
            json_values.map(lambda v: json.dumps(v)),
            st.builds(
                lambda r, g, d: json.dumps({"release_id": r, "gate": g, "digest": d}),
                st.text(max_size=30),
                st.one_of(st.none(), st.text(max_size=10), st.integers()),
                st.one_of(st.none(), st.just("sha256:" + "a" * 64), st.text(max_size=20)),
            ),
        )
    )
    action: dict[str, Any] = {
        "action_id": draw(st.sampled_from(["signoff_approve", "signoff_reject", "other"])),
        "value": value,
        "action_ts": draw(st.one_of(st.text(max_size=12), st.none())),
        "type": "button",
        "block_id": "signoff_actions",
    }
    user = draw(st.one_of(st.builds(lambda i: {"id": i}, st.sampled_from(["U0ALICE", "U0DANA", "U0NOBODY", ""])), json_values))
    payload: dict[str, Any] = {
        "type": "block_actions",
        "api_app_id": APP_ID,
        "team": draw(st.one_of(st.just({"id": TEAM_ID}), json_values)),
        "user": user,
        "actions": draw(st.one_of(st.just([action]), st.lists(json_values, max_size=2))),
        "channel": draw(st.one_of(st.just({"id": "C0FUZZ"}), json_values)),
        "container": draw(st.one_of(st.just({"message_ts": "1.2"}), json_values)),
        "trigger_id": draw(st.one_of(st.text(max_size=10), st.none())),
    }
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=3)):
        payload.pop(key, None)
    return urlencode({"payload": json.dumps(payload)})


@st.composite
def slack_bodies(draw: st.DrawFn) -> str:
    """Signed-but-hostile Slack bodies: interactions, slash commands, events, raw text."""
    kind = draw(st.sampled_from(["actions", "command", "event", "view", "form", "json", "text"]))
    if kind == "actions":
        return draw(slack_block_actions())
    if kind == "command":
        fields = {"command": draw(st.sampled_from(["/signoff", "/other", ""])), "text": draw(st.text(max_size=60)),
                  "user_id": draw(st.sampled_from(["U0ALICE", "U0CAROL", "U0NOBODY", ""])), "team_id": TEAM_ID,
                  "response_url": "http://127.0.0.1:9/nowhere", "trigger_id": "1.2.3", "api_app_id": APP_ID}
        drop = draw(st.lists(st.sampled_from(sorted(fields)), max_size=3))
        return urlencode({k: v for k, v in fields.items() if k not in drop})
    if kind == "event":
        return json.dumps({"type": draw(st.sampled_from(["event_callback", "url_verification", "app_rate_limited", "x"])),
                           "team_id": TEAM_ID, "api_app_id": APP_ID, "challenge": draw(st.text(max_size=10)), "event": draw(json_values)})
    if kind == "view":
        view = {"id": "V1", "callback_id": "signoff_reject_reason", "private_metadata": draw(st.text(max_size=60)), "state": draw(json_values)}
        return urlencode({"payload": json.dumps({"type": "view_submission", "team": {"id": TEAM_ID}, "user": draw(json_values), "view": view, "api_app_id": APP_ID})})
    if kind == "form":
        return urlencode(draw(st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=4)))
    if kind == "json":
        return json.dumps(draw(json_values))
    return draw(st.text(max_size=300))


@st.composite
def jira_payloads(draw: st.DrawFn) -> Any:
    """Jira-shaped webhooks with hostile values, and arbitrary JSON."""
    if draw(st.booleans()):
        return draw(json_values)
    labels = draw(st.one_of(
        st.lists(st.sampled_from(["signoff", "signoff-release-rel-1", "signoff-release-rel-2", "signoff-gate-production",
                                  "signoff-digest-" + "a" * 64, "signoff-digest-zz"]) | st.text(max_size=20), max_size=5),
        json_values,
    ))
    account = draw(st.one_of(st.sampled_from(["jira-alice-0001", "jira-dana-0004", "jira-nobody"]), json_values))
    issue = {"key": draw(st.one_of(st.text(max_size=8), json_values)), "fields": draw(st.one_of(st.just({"labels": labels}), json_values))}
    if draw(st.booleans()):
        return {"webhookEvent": "jira:issue_updated", "user": {"accountId": account}, "issue": issue,
                "changelog": draw(st.one_of(
                    st.just({"items": [{"field": "status", "toString": draw(st.sampled_from(["Approved", "Declined", "Done"]) | st.text(max_size=8))}]}),
                    json_values))}
    body = draw(st.one_of(st.sampled_from(["/approve", "/approve lgtm", "/reject", "/reject no", "/revoke"]), st.text(max_size=40), json_values))
    return {"webhookEvent": "comment_created", "issue": issue, "comment": {"body": body, "author": {"accountId": account}}}


def jira_headers(body: bytes, *, signature: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "X-Atlassian-Webhook-Identifier": uuid.uuid4().hex}
    if signature is not None:
        headers["X-Hub-Signature"] = signature
    return headers


def assert_no_crash(response: httpx.Response, errors: ErrorLogs) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    crashed = [r for r in errors.records if r.exc_info or "Failed to run" in r.getMessage()]
    assert not crashed, [r.getMessage()[:300] for r in crashed]


def wait_for_listeners(http: TestClient) -> None:
    """Bolt runs listeners after the ack; give them a moment to finish (or to crash)."""
    time.sleep(0.05)
    http.get("/healthz")


# --------------------------------------------------------------------------- Slack route


def test_slack_unsigned_or_wrongly_signed_is_401_and_submits_nothing(gateway: tuple[TestClient, RecordingClient, ErrorLogs]) -> None:
    http, recorder, errors = gateway

    @FUZZ
    @given(body=st.one_of(slack_bodies(), garbage.map(lambda b: b.decode("latin-1"))), how=st.sampled_from(["none", "wrong-secret", "stale", "garbage"]), junk=header_text)
    def run(body: str, how: str, junk: str) -> None:
        if how == "none":
            headers = {"content-type": "application/x-www-form-urlencoded"}
        elif how == "wrong-secret":
            headers = signed_headers("not-the-secret", body)
        elif how == "stale":
            headers = signed_headers(SLACK_SECRET, body, timestamp=int(time.time()) - 3600)
        else:
            headers = {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": junk[:20], "x-slack-signature": junk}
        response = http.post("/slack/events", content=body.encode("utf-8"), headers=headers)
        assert response.status_code == 401, (how, response.status_code, response.text[:200])

    run()
    wait_for_listeners(http)
    assert recorder.attempts == []
    assert_no_crash(http.get("/healthz"), errors)


def test_slack_non_utf8_body_is_a_4xx_not_a_crash(gateway: tuple[TestClient, RecordingClient, ErrorLogs]) -> None:
    http, recorder, errors = gateway

    @FUZZ
    @given(body=garbage.filter(lambda b: not _is_utf8(b)), signed=st.booleans())
    def run(body: bytes, signed: bool) -> None:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if signed:  # signed over the raw bytes, as an attacker holding the secret could
            ts = str(int(time.time()))
            mac = hmac.new(SLACK_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
            headers.update({"x-slack-request-timestamp": ts, "x-slack-signature": "v0=" + mac})
        response = http.post("/slack/events", content=body, headers=headers)
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])

    run()
    assert recorder.attempts == []
    assert_no_crash(http.get("/healthz"), errors)


def test_slack_correctly_signed_garbage_never_crashes(gateway: tuple[TestClient, RecordingClient, ErrorLogs]) -> None:
    """Signed requests are authenticated, so they may reach the release; hostile contents must
    still never crash a listener, and an identity is only ever one the directory vouches for."""
    http, recorder, errors = gateway

    @settings(FUZZ, max_examples=40)
    @given(body=slack_bodies())
    def run(body: str) -> None:
        errors.records.clear()
        response = http.post("/slack/events", content=body.encode(), headers=signed_headers(SLACK_SECRET, body))
        wait_for_listeners(http)
        assert_no_crash(response, errors)
        assert response.status_code in (200, 400, 401, 404), (response.status_code, response.text[:200])

    run()
    for attempt in recorder.attempts:
        assert attempt.channel == "slack" and attempt.identity in DIRECTORY_EMAILS, attempt


# --------------------------------------------------------------------------- Jira route


def test_jira_unsigned_or_wrongly_signed_is_401_and_submits_nothing(gateway: tuple[TestClient, RecordingClient, ErrorLogs]) -> None:
    http, recorder, errors = gateway

    @FUZZ
    @given(
        payload=jira_payloads(),
        how=st.sampled_from(["none", "wrong-secret", "sha1", "garbage", "other-body"]),
        junk=header_text,
    )
    def run(payload: Any, how: str, junk: str) -> None:
        body = json.dumps(payload).encode()
        signature = {
            "none": None,
            "wrong-secret": signature_for(body, "not-the-secret"),
            "sha1": "sha1=" + hmac.new(JIRA_SECRET.encode(), body, hashlib.sha1).hexdigest(),
            "garbage": junk,
            "other-body": signature_for(body + b" ", JIRA_SECRET),
        }[how]
        response = http.post("/jira/webhook", content=body, headers=jira_headers(body, signature=signature))
        assert response.status_code == 401, (how, response.status_code, response.text[:200])
        assert response.json()["status"] == "unauthorized"

    run()
    assert recorder.attempts == []
    assert_no_crash(http.get("/healthz"), errors)


def test_jira_correctly_signed_garbage_is_a_clear_answer(gateway: tuple[TestClient, RecordingClient, ErrorLogs]) -> None:
    http, recorder, errors = gateway

    @FUZZ
    @given(raw=st.one_of(jira_payloads().map(lambda p: json.dumps(p).encode()), garbage))
    def run(raw: bytes) -> None:
        errors.records.clear()
        before = len(recorder.attempts)
        response = http.post("/jira/webhook", content=raw, headers=jira_headers(raw, signature=signature_for(raw, JIRA_SECRET)))
        assert_no_crash(response, errors)
        answer = response.json()
        assert response.status_code in (200, 400), (response.status_code, answer)
        assert isinstance(answer.get("reason"), str) and answer["reason"] and "\n" not in answer["reason"]
        if response.status_code == 400:
            assert answer["status"] == "invalid"
        if len(recorder.attempts) > before:
            assert answer["status"] == "submitted"
            attempt = recorder.attempts[-1]
            assert attempt.channel == "jira" and attempt.identity in DIRECTORY_EMAILS, attempt

    run()


# --------------------------------------------------------------------------- oversized bodies


@pytest.mark.parametrize("path", ["/slack/events", "/jira/webhook"])
def test_oversized_body_with_content_length_is_413(gateway: tuple[TestClient, RecordingClient, ErrorLogs], path: str) -> None:
    http, recorder, errors = gateway
    body = b"payload=" + b"A" * (ONE_MIB + 10)
    headers = signed_headers(SLACK_SECRET, body.decode()) if path.startswith("/slack") else {"X-Hub-Signature": signature_for(body, JIRA_SECRET)}
    response = http.post(path, content=body, headers=headers)
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert recorder.attempts == []
    assert_no_crash(http.get("/healthz"), errors)


@pytest.mark.parametrize("path", ["/slack/events", "/jira/webhook"])
def test_oversized_chunked_body_without_content_length_is_413(gateway: tuple[TestClient, RecordingClient, ErrorLogs], path: str) -> None:
    http, recorder, errors = gateway
    body = b"payload=" + b"A" * (ONE_MIB + 10)
    headers = signed_headers(SLACK_SECRET, body.decode()) if path.startswith("/slack") else {"X-Hub-Signature": signature_for(body, JIRA_SECRET)}

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    response = http.post(path, content=chunks(), headers=headers)
    assert response.request.headers.get("content-length") is None  # really chunked
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert recorder.attempts == []
    assert_no_crash(http.get("/healthz"), errors)


async def test_oversized_chunked_body_over_real_http_is_refused_before_it_is_all_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a real socket (uvicorn), an 8 MiB chunked upload with no Content-Length is refused
    with 413 (the routes stop reading at 1 MiB; nothing is parsed)."""
    from tests.test_slack_app import serve

    monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK_SECRET)
    monkeypatch.setenv("SIGNOFF_JIRA_WEBHOOK_SECRET", JIRA_SECRET)
    recorder = RecordingClient()
    app = create_app(Settings.from_env(), client=recorder, slack_web_client=AsyncWebClient(token="xoxb-fuzz", base_url="http://127.0.0.1:9/api/"))  # type: ignore[arg-type]
    async with serve(app) as base:
        for path, headers in (
            ("/slack/events", signed_headers(SLACK_SECRET, "payload=x")),
            ("/jira/webhook", {"X-Hub-Signature": signature_for(b"x", JIRA_SECRET)}),
        ):
            sent = 0

            async def endless() -> Any:
                nonlocal sent
                while sent < 8 * ONE_MIB:  # bounded: 8 MiB at most
                    sent += 64 * 1024
                    yield b"A" * (64 * 1024)

            async with httpx.AsyncClient(timeout=30) as client:
                try:
                    response = await client.post(base + path, content=endless(), headers=headers)
                    status = response.status_code
                except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
                    status = 413  # the server answered and closed while we were still sending
            assert status == 413, (path, status)
    assert recorder.attempts == []


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --------------------------------------------------------------------------- release-file loader


def _check_release_error(err: ReleaseFileError, source: str) -> None:
    text = str(err)
    assert isinstance(err, SignoffError)
    assert source in text, text
    assert "\n" not in text and "\r" not in text, text
    assert "Traceback" not in text and "File \"" not in text, text
    assert text.endswith("."), text
    assert len(text) < 600, text


yaml_scalars = st.one_of(
    st.sampled_from(["2020-13-45", "2020-02-30 25:61:00", "1" * 5000, "0x" + "f" * 5000, ".nan", "-.inf", "~", "!!binary zz",
                     "!!python/object:os.system ls", "&a [*a]", "*undefined", "{", "]", "'unterminated", "? complex key", "%TAG ! x"]),
    st.text(max_size=30),
)


@st.composite
def yamlish_documents(draw: st.DrawFn) -> str:
    """Release-file-like YAML with hostile values dropped into real fields."""
    doc: dict[str, Any] = {
        "service": "checkout",
        "requested_by": "dana@example.com",
        "change": {"summary": "fuzz", "paths": ["a"]},
        "artifact": "sha256:" + "a" * 64,
        "deploy": {"target": "command", "settings": {"deploy": "true"}},
        "canary": {"steps": [{"set_weight": 10}], "analyses": {}},
        "gates": [{"name": "production", "required": 2}],
    }
    text = yaml.safe_dump(doc, sort_keys=False)
    lines = text.splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}: {draw(yaml_scalars)}" if draw(st.booleans()) else draw(st.text(max_size=40))
    return "\n".join(lines) + "\n"


@FUZZ
@given(data=json_values)
def test_parse_release_on_arbitrary_json_raises_only_release_file_error(data: Any) -> None:
    try:
        parse_release(data, "fuzz.yaml")
    except ReleaseFileError as e:
        _check_release_error(e, "fuzz.yaml")


@FUZZ
@given(data=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["service", "requested_by", "change", "artifact", "build", "deploy",
                                                                         "canary", "gates", "steps", "analyses", "summary", "paths", "name"]), c, max_size=6),
    max_leaves=40,
))
def test_parse_release_on_release_shaped_json(data: Any) -> None:
    try:
        parse_release(data, "shaped.yaml")
    except ReleaseFileError as e:
        _check_release_error(e, "shaped.yaml")


def test_load_release_file_on_random_bytes_and_yaml(tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"

    @FUZZ
    @given(content=st.one_of(garbage, yamlish_documents().map(str.encode), st.text(max_size=500).map(str.encode)))
    def run(content: bytes) -> None:
        path.write_bytes(content)
        try:
            load_release_file(path)
        except ReleaseFileError as e:
            _check_release_error(e, str(path))

    run()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("service: " + "1" * 5000 + "\n", id="int-over-4300-digits"),
        pytest.param("service: 2020-13-45\n", id="impossible-date"),
        pytest.param("[" * 50_000, id="deeply-nested-flow"),
        pytest.param("a: " + "{a: " * 3000 + "1" + "}" * 3000, id="deeply-nested-mapping"),
        pytest.param('"unknown\\nfield": 1\nservice: checkout\n', id="newline-in-key"),
        pytest.param("x" * 1_000_001, id="over-1MB"),
    ],
)
def test_load_release_file_known_hostile_documents(tmp_path: Path, text: str) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(text)
    with pytest.raises(ReleaseFileError) as err:
        load_release_file(path)
    _check_release_error(err.value, str(path))


def test_yaml_alias_bomb_in_a_valid_release_is_refused(tmp_path: Path) -> None:
    """Small on disk, 10^8 values once expanded; it would otherwise pass validation (deploy
    settings accept anything) and blow up when serialised into the workflow input."""
    levels = ["    l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 8)
    ]
    text = (
        "service: checkout\nrequested_by: dana@example.com\nchange: {summary: bomb}\n"
        "artifact: sha256:" + "a" * 64 + "\ndeploy:\n  target: command\n  settings:\n    deploy: 'true'\n"
        + "\n".join(levels) + "\n"
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert path.stat().st_size < 2000
    started = time.monotonic()
    with pytest.raises(ReleaseFileError, match="aliases") as err:
        load_release_file(path)
    assert time.monotonic() - started < 5
    _check_release_error(err.value, str(path))
