"""The Slack gateway over real HTTP against a real workflow on the Temporal dev server.

The gateway is a Starlette app holding `slack_routes(app)`, served by uvicorn on a free
loopback port. uvicorn runs as a task on the test's event loop rather than in a thread because
the Temporal client and worker the app talks to live on that loop; requests still cross a real
socket, with real signatures, through bolt's real verification. Slack's Web API is the local
stub (tests/stubs/slack_stub.py).

Until the real ReleaseWorkflow exists, the workflow is `SlackGateTestWorkflow` below: a tiny
gate exposing the same `submit_approval` Update (ApprovalAttempt → ApprovalResult), a
`status` query and an `abort` Update, so the path from click to recorded approval is real.
"""

from __future__ import annotations

from dataclasses import replace

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from approvals.slack.app import build_slack_app, slack_behaviour, slack_routes
from signoff.slack_blocks import ACTIONS_BLOCK, APPROVE_ACTION, PROGRESS_BLOCK, REJECT_ACTION, REJECT_MODAL, button_value
from signoff.slack_config import SlackConfig, close_session
from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.errors import TemporalUnreachable
from signoff.models import (
    ApprovalAttempt,
    ApprovalRecord,
    ApprovalResult,
    GateStatus,
    Open,
    Phase,
    RefusalRecord,
    ReleaseStatus,
)
from signoff.search_attributes import KIND, PHASE, REQUESTER, SERVICE
from tests.stubs.slack_stub import APP_ID, TEAM_ID, SlackStub, signed_headers

SECRET = "test-signing-secret-0123456789abcdef"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32

DIRECTORY = """
people:
  - {email: alice@example.com, name: Alice Archer, slack_user_id: U0ALICE}
  - {email: bob@example.com, name: Bob Baker, slack_user_id: U0BOB}
  - {email: carol@example.com, name: Carol Cole, slack_user_id: U0CAROL}
  - {email: dana@example.com, name: Dana Dev, slack_user_id: U0DANA}
  - {email: erin@example.com, name: Erin Early}
groups:
  release-managers: [alice@example.com, bob@example.com, erin@example.com]
  sre: [carol@example.com]
  on-call: [carol@example.com]
"""


# --------------------------------------------------------------------------- test workflow


class GateTestInput(Open):
    status: ReleaseStatus
    members: list[str]


@workflow.defn(name="SlackGateTestWorkflow", sandboxed=False)
class SlackGateTestWorkflow:
    """A minimal two-of-N gate with separation of duties, speaking the real Update contract.

    Unsandboxed because it lives in a test module that imports uvicorn, httpx and bolt; it is
    deterministic (state changes only in handlers, time from workflow.now()).
    """

    @workflow.init
    def __init__(self, args: GateTestInput) -> None:
        # state exists before the first Update is handled (an Update can arrive with the start)
        self._status: ReleaseStatus | None = args.status
        self._members: list[str] = args.members

    @workflow.run
    async def run(self, args: GateTestInput) -> str:
        await workflow.wait_condition(lambda: self._gate().state != "open" or self._status.phase == Phase.aborted)  # type: ignore[union-attr]
        workflow.upsert_search_attributes([PHASE.value_set(self._status.phase.value)])  # type: ignore[union-attr]
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._gate().state

    def _gate(self) -> GateStatus:
        assert self._status is not None
        return self._status.gates[0]

    @workflow.query
    def status(self) -> ReleaseStatus:
        assert self._status is not None
        return self._status

    @workflow.update
    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        assert self._status is not None
        gate = self._gate()
        now = workflow.now()

        def refuse(reason: str) -> ApprovalResult:
            gate.refusals.append(RefusalRecord(by=attempt.identity, channel=attempt.channel, at=now, decision=attempt.decision, reason=reason))
            return ApprovalResult(accepted=False, reason=reason, gate=gate)

        if gate.state != "open":
            return refuse(f"gate {gate.name} is already {gate.state}")
        if attempt.identity == self._status.requested_by:
            return refuse("the requester cannot approve their own release")
        if attempt.digest != self._status.artifact_digest:
            return refuse("you saw a different artifact than the one this release ships")
        if attempt.identity not in self._members:
            return refuse(f"{attempt.identity} is not in release-managers")
        if attempt.decision == "reject":
            gate.rejections.append(ApprovalRecord(by=attempt.identity, channel=attempt.channel, at=now, reason=attempt.reason))
            gate.state = "rejected"
            self._status.phase = Phase.rejected
        elif all(a.by != attempt.identity for a in gate.approvals):
            gate.approvals.append(ApprovalRecord(by=attempt.identity, channel=attempt.channel, at=now))
            if len(gate.approvals) >= gate.required:
                gate.state = "approved"
                self._status.phase = Phase.promoting
        gate.progress = f"{len(gate.approvals)} of {gate.required}: " + ", ".join(a.by for a in gate.approvals)
        return ApprovalResult(accepted=True, reason="recorded", gate=gate)

    @workflow.update
    async def abort(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._status is not None
        if self._status.phase.is_final:
            raise ApplicationError(f"release {self._status.release_id} has already finished.")
        self._status.phase = Phase.aborted
        self._status.outcome = "aborted"
        self._status.reason = f"{request['identity']}: {request['reason']}"
        return {"aborted": True}


# --------------------------------------------------------------------------- fixtures


@dataclass
class Gateway:
    url: str
    stub: SlackStub
    client: Client
    signoff: SignoffClient
    task_queue: str
    settings: Settings
    started: list[str] = field(default_factory=list)

    async def terminate_leftovers(self) -> None:
        """Leave no running release behind: `/signoff list` in a later test would query it."""
        for rid in self.started:
            try:
                await self.client.get_workflow_handle(rid).terminate("test finished")
            except Exception:  # noqa: BLE001 - already completed is fine
                pass

    async def start_release(self, *, required: int = 2, slack_ts: str = "1700000000.000001") -> str:
        release_id = f"rel-checkout-{uuid.uuid4().hex[:8]}"
        status = ReleaseStatus(
            release_id=release_id,
            service="checkout",
            artifact_digest=DIGEST,
            phase=Phase.awaiting_approval,
            tier="high",
            requested_by="dana@example.com",
            change_summary="raise the checkout timeout",
            gates=[GateStatus(name="production", state="open", required=required, from_groups=["release-managers"], channels=["slack", "jira", "cli"], slack_channel="C0RELEASES", slack_ts=slack_ts)],
        )
        self.started.append(release_id)
        await self.client.start_workflow(
            SlackGateTestWorkflow.run,
            GateTestInput(status=status, members=["alice@example.com", "bob@example.com", "erin@example.com"]),
            id=release_id,
            task_queue=self.task_queue,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(KIND, "release"), SearchAttributePair(PHASE, "awaiting_approval"), SearchAttributePair(SERVICE, "checkout"), SearchAttributePair(REQUESTER, "dana@example.com")]
            ),
        )
        return release_id

    async def status(self, release_id: str) -> ReleaseStatus:
        return await self.signoff.status(release_id)

    async def post(self, body: str, headers: dict[str, str]) -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=10) as http:
            started = time.perf_counter()
            resp = await http.post(self.url, content=body, headers=headers)
            return resp, time.perf_counter() - started

    async def click(self, release_id: str, user: str, *, action: str = APPROVE_ACTION, digest: str = DIGEST, extra_headers: dict[str, str] | None = None, action_ts: str | None = None, team: str = TEAM_ID) -> tuple[httpx.Response, float]:
        body = click_body(release_id, user, action=action, digest=digest, action_ts=action_ts, team=team)
        return await self.post(body, {**signed_headers(SECRET, body), **(extra_headers or {})})

    async def command(self, text: str, user: str = "U0ALICE") -> tuple[httpx.Response, float]:
        body = urlencode(
            {
                "token": "legacy-verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "channel_id": "C0RELEASES",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/signoff",
                "text": text,
                "response_url": self.stub.response_url(uuid.uuid4().hex[:8]),
                "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            }
        )
        return await self.post(body, signed_headers(SECRET, body))


def click_body(release_id: str, user: str, *, action: str = APPROVE_ACTION, digest: str = DIGEST, action_ts: str | None = None, team: str = TEAM_ID, message_ts: str = "1700000000.000001", value: str | None = None, channel: str = "C0RELEASES") -> str:
    """A block_actions payload with Slack's real shape, form-encoded as Slack sends it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "mallory", "name": "bob@example.com", "team_id": team},  # name is never trusted
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"{uuid.uuid4().int % 10**10}.738474920.8088930838d88f008e0",
        "team": {"id": team, "domain": "signoff-test"},
        "channel": {"id": channel, "name": "releases"},
        "message": {"type": "message", "ts": message_ts, "text": "Approval needed", "blocks": []},
        "response_url": "https://hooks.slack.com/actions/T0SIGNOFF/1/abc",
        "actions": [
            {
                "action_id": action,
                "block_id": ACTIONS_BLOCK,
                "text": {"type": "plain_text", "text": "Approve" if action == APPROVE_ACTION else "Reject"},
                "value": value or button_value(release_id, "production", digest),
                "style": "primary",
                "type": "button",
                "action_ts": action_ts or f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """uvicorn on a free loopback port as a task on this loop; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start within 4 s"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
def stub() -> Any:
    s = SlackStub(users={
        "U0FRANK": {"email": "Erin@Example.com", "name": "Erin via users.info"},
        "U0BOT2": {"email": "bot@example.com", "is_bot": True},
        # Mallory sets her profile email to alice's; the directory pins alice to U0ALICE.
        "U0MALLORY": {"email": "alice@example.com", "name": "Not Alice"},
        "U0GUEST": {"email": "erin@example.com", "name": "Erin's guest account", "is_restricted": True},
        "U0STRANGER": {"email": "stranger@example.com", "name": "Someone"},
    }).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def directory_path(tmp_path: Path) -> Path:
    p = tmp_path / "approvers.yaml"
    p.write_text(DIRECTORY)
    return p


GatewayFactory = Callable[..., Any]


@asynccontextmanager
async def running_gateway(
    client: Client,
    stub: SlackStub,
    directory_path: Path,
    task_queue: str,
    *,
    with_worker: bool = True,
    submit_timeout: float = 10.0,
    client_factory: Callable[[], Awaitable[SignoffClient]] | None = None,
    team_id: str | None = TEAM_ID,
) -> AsyncIterator[Gateway]:
    settings = replace(Settings.from_env(), namespace="default", task_queue=task_queue, directory_path=directory_path, ui_url="http://localhost:8233")
    signoff = SignoffClient(client, settings=settings, task_queue=task_queue)
    config = SlackConfig(bot_token="xoxb-test", signing_secret=SECRET, api_url=stub.api_url, default_channel="C0RELEASES", team_id=team_id, app_id=APP_ID, submit_timeout=submit_timeout)

    async def factory() -> SignoffClient:
        return signoff

    from signoff.slack_config import make_web_client

    web = make_web_client(config)
    app = build_slack_app(client_factory or factory, settings=settings, directory_path=directory_path, web_client=web, config=config)
    starlette = Starlette(routes=slack_routes(app))
    async with serve(starlette) as base:
        gw = Gateway(url=f"{base}/slack/events", stub=stub, client=client, signoff=signoff, task_queue=task_queue, settings=settings)
        try:
            if with_worker:
                async with Worker(client, task_queue=task_queue, workflows=[SlackGateTestWorkflow]):
                    yield gw
            else:
                yield gw
        finally:
            await gw.terminate_leftovers()
            await close_session(web)


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def ephemerals(stub: SlackStub, user: str) -> list[str]:
    return [r.body["text"] for r in stub.calls("chat.postEphemeral") if r.body.get("user") == user]


# --------------------------------------------------------------------------- tests


async def test_forged_missing_and_stale_signatures_get_401_and_change_nothing(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        body = click_body(rid, "U0ALICE")
        forged = signed_headers("not-the-secret", body)
        missing = {"content-type": "application/x-www-form-urlencoded"}
        stale = signed_headers(SECRET, body, timestamp=int(time.time()) - 6 * 60)
        future = signed_headers(SECRET, body, timestamp=int(time.time()) + 6 * 60)
        tampered_headers = signed_headers(SECRET, body)
        tampered = body.replace("U0ALICE", "U0BOB")
        for headers, sent in [(forged, body), (missing, body), (stale, body), (future, body), (tampered_headers, tampered)]:
            resp, _ = await gw.post(sent, headers)
            assert resp.status_code == 401, resp.text
        await asyncio.sleep(0.5)  # anything wrongly dispatched would have reached Slack/Temporal by now
        status = await gw.status(rid)
        assert status.gates[0].approvals == [] and status.gates[0].refusals == []
        assert stub.calls("chat.postEphemeral") == [] and stub.calls("chat.update") == []
        # the same body, correctly signed and fresh, is accepted: the 401s were the signature
        resp, _ = await gw.post(body, signed_headers(SECRET, body))
        assert resp.status_code == 200


async def test_two_clicks_reach_quorum_and_the_message_updates_in_place(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        resp, elapsed = await gw.click(rid, "U0ALICE")
        assert resp.status_code == 200 and elapsed < 3.0
        await stub.until("chat.update", 1)
        status = await gw.status(rid)
        # the payload's user.name claimed bob; the identity comes from the directory mapping only
        assert [(a.by, a.channel) for a in status.gates[0].approvals] == [("alice@example.com", "slack")]
        assert "recorded" in ephemerals(stub, "U0ALICE")[0] and "1 of 2 — Alice ✅" in ephemerals(stub, "U0ALICE")[0]
        first = stub.calls("chat.update")[0].body
        assert (first["channel"], first["ts"]) == ("C0RELEASES", "1700000000.000001")
        progress = next(b for b in first["blocks"] if b.get("block_id") == PROGRESS_BLOCK)
        assert "1 of 2 — Alice ✅" in progress["text"]["text"]
        assert any(b.get("block_id") == ACTIONS_BLOCK for b in first["blocks"])

        resp, elapsed = await gw.click(rid, "U0BOB")
        assert resp.status_code == 200 and elapsed < 3.0
        await stub.until("chat.update", 2)
        final = stub.calls("chat.update")[1].body
        assert final["ts"] == "1700000000.000001"  # same message, edited in place
        assert not any(b.get("block_id") == ACTIONS_BLOCK for b in final["blocks"])  # buttons gone
        assert "Approved" in next(b for b in final["blocks"] if b.get("block_id") == PROGRESS_BLOCK)["text"]["text"]
        assert await gw.client.get_workflow_handle(rid).result() == "approved"


async def test_requester_and_stale_digest_are_refused_ephemerally(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        resp, elapsed = await gw.click(rid, "U0DANA")
        assert resp.status_code == 200 and elapsed < 3.0
        await stub.until("chat.postEphemeral", 1)
        assert "not counted: the requester cannot approve their own release" in ephemerals(stub, "U0DANA")[0]
        await gw.click(rid, "U0ALICE", digest=OTHER_DIGEST)
        await stub.until("chat.postEphemeral", 2)
        assert "different artifact" in ephemerals(stub, "U0ALICE")[0]
        status = await gw.status(rid)
        assert status.gates[0].approvals == []
        assert [r.by for r in status.gates[0].refusals] == ["dana@example.com", "alice@example.com"]


async def test_users_info_email_maps_unknown_slack_ids_and_unmapped_users_are_refused(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        await gw.click(rid, "U0FRANK")  # not in the directory; users.info says Erin@Example.com
        await stub.until("chat.postEphemeral", 1)
        assert [r.body["user"] for r in stub.calls("users.info")] == ["U0FRANK"]
        status = await gw.status(rid)
        assert [a.by for a in status.gates[0].approvals] == ["erin@example.com"]

        await gw.click(rid, "U0GHOST")  # users.info: user_not_found
        await gw.click(rid, "U0BOT2")  # a bot account
        await stub.until("chat.postEphemeral", 3)
        assert "not recorded" in ephemerals(stub, "U0GHOST")[0] and "user_not_found" in ephemerals(stub, "U0GHOST")[0]
        assert "bots and deactivated accounts cannot approve" in ephemerals(stub, "U0BOT2")[0]
        status = await gw.status(rid)
        assert [a.by for a in status.gates[0].approvals] == ["erin@example.com"]
        assert status.gates[0].refusals == []  # never reached the workflow


async def test_profile_email_of_a_pinned_person_guests_and_strangers_are_refused(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    """users.info email mapping never overrides the directory, and only full members map."""
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        for user in ("U0MALLORY", "U0GUEST", "U0STRANGER"):
            await gw.click(rid, user)
        await stub.until("chat.postEphemeral", 3)
        assert "pins another Slack account for alice@example.com" in ephemerals(stub, "U0MALLORY")[0]
        assert "guest and external accounts cannot approve" in ephemerals(stub, "U0GUEST")[0]
        assert "stranger@example.com is not in the approver directory" in ephemerals(stub, "U0STRANGER")[0]
        status = await gw.status(rid)
        assert status.gates[0].approvals == [] and status.gates[0].refusals == []  # nothing reached the workflow


async def test_captured_click_replayed_after_a_gateway_restart_is_dropped(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    """The same signed click body (within Slack's 5-minute window) sent again to a new gateway."""
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        await gw.click(rid, "U0ALICE", action_ts="1700000200.000001")
        await stub.until("chat.postEphemeral", 1)
        first = await gw.status(rid)
        assert [a.by for a in first.gates[0].approvals] == ["alice@example.com"]
    # a new gateway process on the same state directory (shared by replicas) still knows it
    async with running_gateway(client, stub, directory_path, task_queue, with_worker=True) as again:
        resp, _ = await again.click(rid, "U0ALICE", action_ts="1700000200.000001")
        assert resp.status_code == 200
        await asyncio.sleep(1.0)
        assert len(ephemerals(stub, "U0ALICE")) == 1  # the replay was dropped before anything was submitted
        status = await again.status(rid)
        assert [a.by for a in status.gates[0].approvals] == ["alice@example.com"]


async def test_gateway_without_a_team_id_takes_no_slack_action(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue, team_id=None) as gw:
        rid = await gw.start_release()
        resp, _ = await gw.click(rid, "U0ALICE")
        assert resp.status_code == 200
        await asyncio.sleep(0.5)
        status = await gw.status(rid)
        assert status.gates[0].approvals == [] and stub.calls("chat.postEphemeral") == []


async def test_slack_retries_and_double_deliveries_count_once(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        await gw.click(rid, "U0ALICE", action_ts="1700000100.000001")
        resp, elapsed = await gw.click(rid, "U0ALICE", action_ts="1700000100.000001", extra_headers={"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"})
        assert resp.status_code == 200 and elapsed < 3.0
        # a genuine second click (new action_ts) reaches the workflow and is deduplicated by the Update id
        await gw.click(rid, "U0ALICE", action_ts="1700000101.000001")
        await stub.until("chat.postEphemeral", 2)
        await asyncio.sleep(0.3)
        assert len(ephemerals(stub, "U0ALICE")) == 2
        status = await gw.status(rid)
        assert [a.by for a in status.gates[0].approvals] == ["alice@example.com"]


async def test_reject_opens_a_modal_and_the_reason_is_recorded(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        resp, elapsed = await gw.click(rid, "U0BOB", action=REJECT_ACTION)
        assert resp.status_code == 200 and elapsed < 3.0
        opened = (await stub.until("views.open", 1))[0].body
        view = opened["view"] if isinstance(opened["view"], dict) else json.loads(opened["view"])
        assert view["callback_id"] == REJECT_MODAL and opened["trigger_id"]
        status = await gw.status(rid)
        assert status.gates[0].rejections == []  # the click alone rejects nothing
        submission = {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "signoff-test"},
            "user": {"id": "U0BOB", "username": "bob", "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": "123.456.abc",
            "view": {**view, "id": "V0REJECT1", "team_id": TEAM_ID, "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "error budget is spent"}}}}},
        }
        body = urlencode({"payload": json.dumps(submission)})
        resp, elapsed = await gw.post(body, signed_headers(SECRET, body))
        assert resp.status_code == 200 and elapsed < 3.0
        await stub.until("chat.update", 1)
        status = await gw.status(rid)
        assert [(r.by, r.reason) for r in status.gates[0].rejections] == [("bob@example.com", "error budget is spent")]
        update = stub.calls("chat.update")[0].body
        assert not any(b.get("block_id") == ACTIONS_BLOCK for b in update["blocks"])
        assert "Rejected" in json.dumps(update["blocks"]) and "error budget is spent" in json.dumps(update["blocks"])


async def test_click_while_worker_is_down_is_acked_and_recorded_when_it_returns(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue, with_worker=False, submit_timeout=15.0) as gw:
        rid = await gw.start_release()
        resp, elapsed = await gw.click(rid, "U0ALICE")
        assert resp.status_code == 200 and elapsed < 3.0
        await asyncio.sleep(1.5)
        assert stub.calls("chat.postEphemeral") == []  # still waiting for the release, not failed
        async with Worker(client, task_queue=task_queue, workflows=[SlackGateTestWorkflow]):
            await wait_until(lambda: _has_ephemeral(stub, "U0ALICE"), timeout=15)
            assert "recorded" in ephemerals(stub, "U0ALICE")[0]
            status = await gw.status(rid)
            assert [a.by for a in status.gates[0].approvals] == ["alice@example.com"]


async def _has_ephemeral(stub: SlackStub, user: str) -> bool:
    return bool(ephemerals(stub, user))


async def test_click_when_temporal_is_unreachable_says_try_again(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async def unreachable() -> SignoffClient:
        raise TemporalUnreachable("cannot reach Temporal at localhost:1; is `signoff dev` running?")

    async with running_gateway(client, stub, directory_path, task_queue, client_factory=unreachable) as gw:
        resp, elapsed = await gw.click("rel-checkout-00000000", "U0ALICE")
        assert resp.status_code == 200 and elapsed < 3.0
        await stub.until("chat.postEphemeral", 1)
        text = ephemerals(stub, "U0ALICE")[0]
        assert "could not confirm your approval" in text and "click again" in text and "never counted twice" in text
    # worker never answers within the window: same honest answer
    async with running_gateway(client, stub, directory_path, f"{task_queue}-x", with_worker=False, submit_timeout=1.0) as gw:
        rid = await gw.start_release()
        await gw.click(rid, "U0BOB")
        await stub.until("chat.postEphemeral", 2, timeout=10)
        assert "click again" in ephemerals(stub, "U0BOB")[0]


async def test_requests_from_another_workspace_are_ignored(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        rid = await gw.start_release()
        resp, _ = await gw.click(rid, "U0ALICE", team="T0EVIL")
        assert resp.status_code == 200
        await asyncio.sleep(0.5)
        status = await gw.status(rid)
        assert status.gates[0].approvals == [] and status.gates[0].refusals == []
        assert stub.calls("chat.postEphemeral") == []


async def test_slash_command_help_unknown_status_list_and_abort(client: Client, stub: SlackStub, directory_path: Path, task_queue: str) -> None:
    async with running_gateway(client, stub, directory_path, task_queue) as gw:
        resp, elapsed = await gw.command("help")
        assert resp.status_code == 200 and elapsed < 3.0
        assert "/signoff status RELEASE" in resp.json()["text"] and "/signoff abort RELEASE REASON" in resp.json()["text"]
        resp, _ = await gw.command("frobnicate now")
        assert "`frobnicate` is not a /signoff subcommand" in resp.json()["text"] and "/signoff list" in resp.json()["text"]

        rid = await gw.start_release()
        await gw.click(rid, "U0ALICE")
        await stub.until("chat.postEphemeral", 1)
        answer = await command_reply(gw, f"status {rid}")
        assert rid in answer["text"] and "awaiting_approval" in answer["text"] and "1 of 2 — Alice ✅" in answer["text"]
        assert answer["response_type"] == "ephemeral"

        answer = await command_reply(gw, "status rel-does-not-exist")
        assert "failed: no release rel-does-not-exist exists" in answer["text"]

        async def listed() -> bool:
            text = (await command_reply(gw, "list"))["text"]
            return rid in text

        await wait_until(listed, timeout=15)

        answer = await command_reply(gw, f"abort {rid} canary pages", user="U0ALICE")
        assert "only the on-call group may abort" in answer["text"]
        assert (await gw.status(rid)).phase == Phase.awaiting_approval

        answer = await command_reply(gw, f"abort {rid} canary pages", user="U0CAROL")
        assert "is being aborted by carol@example.com" in answer["text"]
        status = await gw.status(rid)
        assert status.phase == Phase.aborted and status.reason == "carol@example.com: canary pages"


async def command_reply(gw: Gateway, text: str, user: str = "U0ALICE") -> dict[str, Any]:
    """Send `/signoff text`; the 200 ack must come at once, the answer via response_url."""
    before = len(gw.stub.calls("response_url"))
    resp, elapsed = await gw.command(text, user=user)
    assert resp.status_code == 200 and elapsed < 3.0
    return (await gw.stub.until("response_url", before + 1))[before].body


def test_http_mode_refuses_to_start_without_a_signing_secret(directory_path: Path) -> None:
    from signoff.errors import ConfigError

    async def factory() -> SignoffClient:
        raise AssertionError("not called")

    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        build_slack_app(factory, settings=Settings(), directory_path=directory_path, config=SlackConfig(bot_token="xoxb-x"))
    app = build_slack_app(factory, settings=Settings(), directory_path=directory_path, config=SlackConfig(bot_token="xoxb-x"), socket_mode=True)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        slack_routes(app)
    assert slack_behaviour(app).config.signing_secret is None


async def test_socket_mode_needs_an_app_token(directory_path: Path) -> None:
    from approvals.slack.app import run_socket_mode
    from signoff.errors import ConfigError

    async def factory() -> SignoffClient:
        raise AssertionError("not called")

    app = build_slack_app(factory, settings=Settings(), directory_path=directory_path, config=SlackConfig(bot_token="xoxb-x"), socket_mode=True)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        await run_socket_mode(app)
