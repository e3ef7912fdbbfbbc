"""`POST /jira/webhook` over real HTTP (uvicorn on a free port), signed like Jira signs it,
forwarding to a real Temporal dev server through the real `SignoffClient`.

The workflow here is a tiny probe exposing the `submit_approval` Update with the real contract
(ApprovalAttempt → ApprovalResult); it records every attempt it receives so the tests can tell
exactly what reached Temporal. The ticket and its labels are made by the real activity code
against the Jira stub, and the webhook payloads are built by the stub from that ticket.
"""

from __future__ import annotations

from dataclasses import replace

import asyncio
import json
import time
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.jira import JiraActivities
from approvals.deliveries import DeliveryLog
from approvals.jira.webhook import DELIVERY_HEADER, MAX_BODY_BYTES, SIGNATURE_HEADER, jira_routes, signature_for
from signoff.client import SignoffClient
from signoff.config import REPO_ROOT, Settings
from signoff.models import ApprovalAttempt, ApprovalResult, GateNotice, GateStatus, ReleaseStatus
from tests.stubs.jira_stub import JiraStub

SECRET = "jira-webhook-secret-for-tests"
DIGEST = "sha256:" + "5a" * 32
DIRECTORY = REPO_ROOT / "examples" / "approvers.yaml"


@workflow.defn(name="JiraApprovalProbe", sandboxed=False)
class JiraApprovalProbe:
    """Stands in for ReleaseWorkflow's approval surface: same Update name and payload types."""

    def __init__(self) -> None:
        self.attempts: list[ApprovalAttempt] = []
        self.approvers: set[str] = set()
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done and workflow.all_handlers_finished())
        return len(self.attempts)

    @workflow.update(name="submit_approval")
    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        self.attempts.append(attempt)
        if attempt.decision == "approve":
            self.approvers.add(attempt.identity)
        progress = f"{len(self.approvers)} of 2: " + ", ".join(sorted(self.approvers))
        return ApprovalResult(accepted=True, reason=f"{attempt.decision} by {attempt.identity} recorded", gate=GateStatus(name=attempt.gate or "", progress=progress))

    @workflow.query(name="attempts")
    def get_attempts(self) -> list[ApprovalAttempt]:
        return self.attempts

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True


class CountingClient(SignoffClient):
    """The real facade, counting what the route hands it."""

    submitted: list[ApprovalAttempt]

    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        self.submitted.append(attempt)
        return await super().submit_approval(attempt)


@dataclass
class Gateway:
    url: str
    http: httpx.AsyncClient
    client: CountingClient
    settings: Settings
    jira: JiraStub
    release_id: str
    ticket: str

    async def post(self, payload: Any, *, delivery: str | None = None, signature: str | None | bool = True, raw: bytes | None = None) -> httpx.Response:
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if signature is True:
            headers[SIGNATURE_HEADER] = signature_for(body, SECRET)
        elif isinstance(signature, str):
            headers[SIGNATURE_HEADER] = signature
        headers[DELIVERY_HEADER] = delivery or str(uuid.uuid4())
        return await self.http.post(f"{self.url}/jira/webhook", content=body, headers=headers)

    async def attempts(self) -> list[ApprovalAttempt]:
        handle = self.client.client.get_workflow_handle(self.release_id)
        return await handle.query("attempts", result_type=list[ApprovalAttempt])

    def deliveries_recorded(self) -> int:
        return DeliveryLog(Path(self.settings.state_dir) / "jira" / "deliveries.sqlite3").count()


async def _serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return server, task, f"http://127.0.0.1:{port}"


async def _stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, timeout=10)


def _app(client: SignoffClient, settings: Settings) -> Starlette:
    async def factory() -> SignoffClient:
        return client

    return Starlette(routes=jira_routes(factory, settings=settings, directory_path=DIRECTORY))


@pytest_asyncio.fixture
async def gateway(dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    release_id = f"rel-checkout-{uuid.uuid4().hex[:8]}"
    settings = replace(Settings.from_env(), state_dir=tmp_path / "gw-state", task_queue=task_queue, extra={"SIGNOFF_JIRA_WEBHOOK_SECRET": SECRET})
    client = CountingClient(dev_env.client, settings=settings, task_queue=task_queue)
    client.submitted = []
    with JiraStub() as jira:
        # the approval ticket, made by the real activity so its labels are the real ones
        acts = JiraActivities(Settings(extra={"SIGNOFF_JIRA_URL": jira.url, "SIGNOFF_JIRA_USER": jira.user, "SIGNOFF_JIRA_TOKEN": jira.token, "SIGNOFF_JIRA_PROJECT": jira.project}))
        status = ReleaseStatus(release_id=release_id, service="checkout", requested_by="dana@example.com", artifact_digest=DIGEST)
        ref = await acts.gate_notice(GateNotice(status=status, gate=GateStatus(name="production", state="open", required=2, channels=["jira"]), event="opened"))
        assert ref.key
        async with Worker(dev_env.client, task_queue=task_queue, workflows=[JiraApprovalProbe], workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await dev_env.client.start_workflow(JiraApprovalProbe.run, id=release_id, task_queue=task_queue, execution_timeout=timedelta(minutes=2))
            server, task, url = await _serve(_app(client, settings))
            try:
                async with httpx.AsyncClient(timeout=20) as http:
                    yield Gateway(url, http, client, settings, jira, release_id, ref.key)
            finally:
                await _stop(server, task)
                await handle.signal(JiraApprovalProbe.finish)
                await asyncio.wait_for(handle.result(), timeout=20)


async def test_approval_by_transition_reaches_the_workflow(gateway: Gateway) -> None:
    payload = gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-alice-0001")
    response = await gateway.post(payload, delivery="delivery-transition-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "submitted" and body["accepted"] is True
    assert body["identity"] == "alice@example.com" and body["decision"] == "approve" and body["gate"] == "production"
    assert body["progress"] == "1 of 2: alice@example.com"
    [attempt] = await gateway.attempts()
    assert (attempt.release_id, attempt.gate, attempt.identity, attempt.channel) == (gateway.release_id, "production", "alice@example.com", "jira")
    assert attempt.digest == DIGEST  # bound to the evidence the ticket showed
    assert attempt.external_ref == f"jira:{gateway.ticket}:delivery-transition-1"


async def test_approval_and_rejection_by_comment(gateway: Gateway) -> None:
    ok = await gateway.post(gateway.jira.comment_webhook(gateway.ticket, "/approve tests and canary plan look fine", account_id="jira-bob-0002"))
    assert ok.status_code == 200 and ok.json()["status"] == "submitted", ok.text
    no_reason = await gateway.post(gateway.jira.comment_webhook(gateway.ticket, "/reject", account_id="jira-carol-0003"))
    assert no_reason.status_code == 200 and no_reason.json()["status"] == "refused"
    assert "needs a reason" in no_reason.json()["reason"]
    chatter = await gateway.post(gateway.jira.comment_webhook(gateway.ticket, "who is on call?", account_id="jira-carol-0003"))
    assert chatter.status_code == 200 and chatter.json()["status"] == "ignored"
    rejected = await gateway.post(gateway.jira.comment_webhook(gateway.ticket, "/reject error budget spent", account_id="jira-carol-0003"))
    assert rejected.json()["decision"] == "reject"
    attempts = await gateway.attempts()
    assert [(a.identity, a.decision, a.reason) for a in attempts] == [
        ("bob@example.com", "approve", "tests and canary plan look fine"),
        ("carol@example.com", "reject", "error budget spent"),
    ]


@pytest.mark.parametrize(
    ("signature", "why"),
    [
        (None, "no X-Hub-Signature"),
        ("sha256=" + "0" * 64, "does not match"),
        ("sha1=0123456789abcdef0123456789abcdef01234567", "only sha256"),
        ("md5=abc", "only sha256"),
        ("garbage", "not of the form"),
    ],
)
async def test_unauthenticated_deliveries_are_401_and_leave_no_trace(gateway: Gateway, signature: str | None, why: str) -> None:
    payload = gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-alice-0001")
    response = await gateway.post(payload, signature=signature)
    assert response.status_code == 401 and why in response.json()["reason"]
    assert gateway.client.submitted == [] and await gateway.attempts() == []
    assert gateway.deliveries_recorded() == 0


async def test_sha1_signature_of_the_right_secret_is_still_refused(gateway: Gateway) -> None:
    import hashlib
    import hmac

    body = json.dumps(gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-alice-0001")).encode()
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    response = await gateway.post(None, raw=body, signature=sha1)
    assert response.status_code == 401 and gateway.client.submitted == []


async def test_the_same_delivery_twice_is_submitted_once_even_across_a_restart(gateway: Gateway) -> None:
    payload = gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-alice-0001")
    first = await gateway.post(payload, delivery="same-delivery")
    second = await gateway.post(payload, delivery="same-delivery")
    assert first.status_code == second.status_code == 200
    assert second.json()["duplicate"] is True and second.json()["identity"] == "alice@example.com"
    assert len(gateway.client.submitted) == 1
    # a restarted gateway (new routes, same state directory) still knows the delivery
    server, task, url = await _serve(_app(gateway.client, gateway.settings))
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            third = await http.post(
                f"{url}/jira/webhook",
                content=json.dumps(payload).encode(),
                headers={SIGNATURE_HEADER: signature_for(json.dumps(payload).encode(), SECRET), DELIVERY_HEADER: "same-delivery"},
            )
    finally:
        await _stop(server, task)
    assert third.status_code == 200 and third.json()["duplicate"] is True
    assert len(gateway.client.submitted) == 1 and len(await gateway.attempts()) == 1
    # the delivery id header is not covered by the HMAC: the same signed body under another id
    # (a captured body replayed) is the same delivery
    fourth = await gateway.post(payload, delivery="another-delivery")
    assert fourth.json()["duplicate"] is True and len(gateway.client.submitted) == 1
    assert len(await gateway.attempts()) == 1


async def test_captured_body_replayed_after_the_window_is_refused(gateway: Gateway) -> None:
    """A signed webhook captured in transit and replayed later: its timestamp is too old."""
    payload = gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-alice-0001")
    payload["timestamp"] -= 3600 * 1000
    response = await gateway.post(payload, delivery="captured")
    assert response.status_code == 401 and "outside the 300 s window" in response.json()["reason"]
    assert gateway.client.submitted == [] and await gateway.attempts() == []


async def test_unmapped_account_is_refused_with_the_reason_and_nothing_submitted(gateway: Gateway) -> None:
    payload = gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-mallory-6666")
    payload["user"]["emailAddress"] = "alice@example.com"
    response = await gateway.post(payload)
    assert response.status_code == 200
    assert response.json()["status"] == "refused" and "jira-mallory-6666" in response.json()["reason"]
    assert gateway.client.submitted == [] and await gateway.attempts() == []


async def test_oversized_body_is_413_before_parsing(gateway: Gateway) -> None:
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    response = await gateway.post(None, raw=body, signature=signature_for(body, SECRET))
    assert response.status_code == 413 and "larger than" in response.json()["reason"]
    assert gateway.client.submitted == [] and gateway.deliveries_recorded() == 0


async def test_malformed_bodies_are_400_with_a_clear_message(gateway: Gateway) -> None:
    not_json = await gateway.post(None, raw=b"{not json")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["reason"]
    no_stamp = await gateway.post({"webhookEvent": "comment_created", "comment": {}, "issue": {}}, delivery="no-stamp")
    assert no_stamp.status_code == 400 and "timestamp" in no_stamp.json()["reason"]
    wrong_shape = await gateway.post({"timestamp": int(time.time() * 1000), "webhookEvent": "comment_created", "comment": "x", "issue": {}}, delivery="bad-shape")
    assert wrong_shape.status_code == 400 and "comment" in wrong_shape.json()["reason"]
    assert gateway.client.submitted == [] and gateway.deliveries_recorded() == 0


async def test_ticket_of_an_unknown_release_is_refused_not_an_error(gateway: Gateway) -> None:
    payload = gateway.jira.transition_webhook(gateway.ticket, "Approved", account_id="jira-alice-0001")
    payload["issue"]["fields"]["labels"] = ["signoff", "signoff-release-rel-does-not-exist", "signoff-gate-production", "signoff-digest-" + "a" * 64]
    response = await gateway.post(payload)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "refused" and "rel-does-not-exist" in response.json()["reason"]


async def test_gateway_without_a_secret_accepts_nothing(dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str) -> None:
    settings = replace(Settings.from_env(), state_dir=tmp_path / "s", task_queue=task_queue)
    client = CountingClient(dev_env.client, settings=settings, task_queue=task_queue)
    client.submitted = []
    server, task, url = await _serve(_app(client, settings))
    try:
        body = b'{"webhookEvent": "comment_created"}'
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"{url}/jira/webhook", content=body, headers={SIGNATURE_HEADER: signature_for(body, "anything")})
    finally:
        await _stop(server, task)
    assert response.status_code == 401 and "SIGNOFF_JIRA_WEBHOOK_SECRET" in response.json()["reason"]
    assert client.submitted == []
