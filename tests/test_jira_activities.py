"""Jira activities against the local Jira REST stub, through the real `jira` library.

The retry test runs the activity on a real Temporal dev server: the stub creates the ticket and
then "loses" the response (503), Temporal retries the activity, and the retry must find the
ticket by its labels instead of creating a second one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.jira import JiraActivities, activities_from_settings
from signoff.config import Settings
from signoff.models import (
    AgentInfo,
    ApprovalRecord,
    CanaryStatus,
    ChatRef,
    GateNotice,
    GateStatus,
    Measurement,
    NotifyRequest,
    Phase,
    ReleaseStatus,
    TestSummary,
)
from tests.stubs.jira_stub import JiraStub

DIGEST = "sha256:" + "c0" * 32
PREVIOUS = "sha256:" + "9e" * 32
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def stub() -> Iterator[JiraStub]:
    with JiraStub() as s:
        yield s


def _settings(stub: JiraStub, **extra: str) -> Settings:
    return Settings(
        ui_url="http://temporal-ui.test:8233",
        extra={
            "SIGNOFF_JIRA_URL": stub.url,
            "SIGNOFF_JIRA_USER": stub.user,
            "SIGNOFF_JIRA_TOKEN": stub.token,
            "SIGNOFF_JIRA_PROJECT": stub.project,
            **extra,
        },
    )


def _activities(stub: JiraStub, **extra: str) -> JiraActivities:
    acts = JiraActivities(_settings(stub, **extra))
    acts.jira_settings = dataclasses.replace(acts.jira_settings, reindex_grace_seconds=0.1, timeout_seconds=5)
    return acts


def _status(release_id: str = "rel-checkout-7f3a") -> ReleaseStatus:
    return ReleaseStatus(
        release_id=release_id,
        service="checkout",
        artifact_digest=DIGEST,
        previous_digest=PREVIOUS,
        requested_by="dana@example.com",
        agent=AgentInfo(id="release-bot", model="model-x", prompt_sha256="f" * 64),
        change_summary="Retry payment capture once; see [here|http://evil.example] {noformat}",
        tier="high",
        tests=TestSummary(passed=41, failed=0, skipped=2, coverage=87.5),
        phase=Phase.awaiting_approval,
    )


def _gate(**over: object) -> GateStatus:
    base = GateStatus(name="production", state="open", required=2, from_groups=["release-managers"], channels=["slack", "jira", "cli"], progress="0 of 2")
    return base.model_copy(update=over)


async def test_unconfigured_jira_does_nothing(stub: JiraStub) -> None:
    acts = JiraActivities(Settings())
    assert await acts.gate_notice(GateNotice(status=_status(), gate=_gate(), event="opened")) == ChatRef()
    assert await acts.open_incident(NotifyRequest(release_id="r", kind="incident", text="x")) == ChatRef()
    assert stub.requests == []
    assert [a.__name__ for a in activities_from_settings(Settings())] == ["gate_notice", "open_incident"]


async def test_gate_that_does_not_allow_jira_gets_no_ticket(stub: JiraStub) -> None:
    ref = await _activities(stub).gate_notice(GateNotice(status=_status(), gate=_gate(channels=["slack"]), event="opened"))
    assert ref == ChatRef() and stub.requests == []


async def test_approval_ticket_carries_the_evidence_and_labels(stub: JiraStub) -> None:
    ref = await _activities(stub).gate_notice(GateNotice(status=_status(), gate=_gate(), event="opened"))
    assert ref.key == "REL-1"
    [create] = stub.requests_to("POST", r"/rest/api/2/issue")
    fields = create.body["fields"]
    assert fields["project"] == {"key": "REL"} and fields["issuetype"] == {"name": "Task"}
    assert set(fields["labels"]) == {"signoff", "signoff-release-rel-checkout-7f3a", "signoff-gate-production", "signoff-digest-" + "c0" * 32}
    assert "checkout" in fields["summary"] and "rel-checkout-7f3a" in fields["summary"]
    text = fields["description"]
    for evidence in (DIGEST, "dana@example.com", "release-bot", "model-x", "41 passed", "87.5%", "high", "0 of 2", "release-managers",
                     "http://temporal-ui.test:8233/namespaces/default/workflows/rel-checkout-7f3a", "/approve", "Approved", "Declined"):
        assert evidence in text, evidence
    # the agent-written summary is shown verbatim, unable to render links or close its block
    assert "{noformat}Retry payment capture once; see [here|http://evil.example] { noformat }{noformat}" in text
    assert create.headers["Authorization"].startswith("Basic ")


async def test_ticket_created_once_when_the_activity_runs_again_after_the_side_effect(stub: JiraStub) -> None:
    acts = _activities(stub)
    notice = GateNotice(status=_status(), gate=_gate(), event="opened")
    first = await acts.gate_notice(notice)
    second = await acts.gate_notice(notice)
    assert first.key == second.key == "REL-1"
    assert len(stub.requests_to("POST", r"/rest/api/2/issue")) == 1
    assert len(stub.issues_with_label("signoff-gate-production")) == 1
    searches = stub.requests_to("GET", r"/rest/api/2/search/jql")
    assert len(searches) == 2 and 'labels = "signoff-release-rel-checkout-7f3a"' in searches[-1].query["jql"][0]
    # another gate of the same release is another ticket
    other = await acts.gate_notice(GateNotice(status=_status(), gate=_gate(name="security"), event="opened"))
    assert other.key == "REL-2"


async def test_search_works_on_jira_server_too() -> None:
    with JiraStub(deployment="Server") as server:
        acts = _activities(server)
        notice = GateNotice(status=_status(), gate=_gate(), event="opened")
        assert (await acts.gate_notice(notice)).key == (await acts.gate_notice(notice)).key == "REL-1"
        assert len(server.requests_to("GET", r"/rest/api/2/search")) == 2
        assert len(server.requests_to("POST", r"/rest/api/2/issue")) == 1


# --------------------------------------------------------------------------- on Temporal


@workflow.defn(name="JiraNoticeProbe", sandboxed=False)
class JiraNoticeProbe:
    """Runs the real activity by name, with a retry policy, the way the release's outbox does."""

    @workflow.run
    async def run(self, notice: GateNotice) -> ChatRef:
        return await workflow.execute_activity(
            "jira_gate_notice",
            notice,
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5),
            result_type=ChatRef,
        )


class _LosesFirstCreateResponse(JiraStub):
    """Creates the issue, then answers 503 as if the response was lost on the way back."""

    lost = 0

    def _create(self, body):  # type: ignore[no-untyped-def]
        code, payload = super()._create(body)
        if self.lost == 0 and code == 201:
            self.lost += 1
            return 503, {"errorMessages": ["gateway timeout after commit"]}
        return code, payload


async def test_retried_activity_finds_the_ticket_its_lost_attempt_made(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    with _LosesFirstCreateResponse() as flaky:
        acts = _activities(flaky)
        async with Worker(dev_env.client, task_queue=task_queue, workflows=[JiraNoticeProbe], activities=[acts.gate_notice], workflow_runner=UnsandboxedWorkflowRunner()):
            ref = await dev_env.client.execute_workflow(
                JiraNoticeProbe.run,
                GateNotice(status=_status(), gate=_gate(), event="opened"),
                id=f"jira-probe-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=45),
            )
        assert flaky.lost == 1
        assert ref.key == "REL-1"
        assert len(flaky.issues) == 1
        assert len(flaky.requests_to("POST", r"/rest/api/2/issue")) == 1  # the retry searched and found it


async def test_jira_down_is_a_retryable_error_and_the_release_keeps_going(dev_env: WorkflowEnvironment, task_queue: str, stub: JiraStub) -> None:
    stub.down = True
    acts = _activities(stub)
    with pytest.raises(ApplicationError) as info:
        await acts.gate_notice(GateNotice(status=_status(), gate=_gate(), event="opened"))
    assert not info.value.non_retryable and info.value.type == "JiraUnavailable"
    assert "will retry" in str(info.value)
    # on Temporal it is retried until Jira answers again
    async with Worker(dev_env.client, task_queue=task_queue, workflows=[JiraNoticeProbe], activities=[acts.gate_notice], workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await dev_env.client.start_workflow(
            JiraNoticeProbe.run,
            GateNotice(status=_status(), gate=_gate(), event="opened"),
            id=f"jira-probe-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=45),
        )
        for _ in range(100):
            if len(stub.requests) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(stub.requests) >= 2 and stub.issues == {}
        stub.down = False
        ref = await handle.result()
    assert ref.key == "REL-1" and len(stub.issues) == 1


async def test_bad_credentials_or_project_fail_permanently_with_the_setting_to_fix(stub: JiraStub) -> None:
    notice = GateNotice(status=_status(), gate=_gate(), event="opened")
    with pytest.raises(ApplicationError) as info:
        await _activities(stub, SIGNOFF_JIRA_TOKEN="wrong").gate_notice(notice)
    assert info.value.non_retryable and "SIGNOFF_JIRA_TOKEN" in str(info.value)
    with pytest.raises(ApplicationError) as info:
        await _activities(stub, SIGNOFF_JIRA_PROJECT="NOPE").gate_notice(notice)
    assert info.value.non_retryable and "SIGNOFF_JIRA_PROJECT" in str(info.value) and "HTTP 400" in str(info.value)
    acts = JiraActivities(Settings(extra={"SIGNOFF_JIRA_URL": stub.url, "SIGNOFF_JIRA_PROJECT": "REL"}))
    with pytest.raises(ApplicationError) as info:
        await acts.gate_notice(notice)
    assert info.value.non_retryable and "SIGNOFF_JIRA_USER" in str(info.value)
    assert stub.issues == {}


async def test_closing_comments_and_transitions_once(stub: JiraStub) -> None:
    acts = _activities(stub)
    opened = await acts.gate_notice(GateNotice(status=_status(), gate=_gate(), event="opened"))
    approvals = [ApprovalRecord(by="alice@example.com", channel="jira", at=NOW), ApprovalRecord(by="bob@example.com", channel="slack", at=NOW)]
    closed = _gate(state="approved", approvals=approvals, jira_key=opened.key, progress="2 of 2")
    for _ in range(2):  # a retried close changes nothing more
        ref = await acts.gate_notice(GateNotice(status=_status(), gate=closed, event="closed"))
        assert ref.key == opened.key
    issue = stub.issues[opened.key]
    assert issue.status == "Done"
    assert len(issue.comments) == 1
    body = issue.comments[0]["body"]
    assert "approved (2 of 2) by alice@example.com, bob@example.com" in body
    assert len(stub.requests_to("POST", r"/rest/api/2/issue/REL-1/transitions")) == 1


async def test_rejected_gate_moves_the_ticket_to_declined_with_the_reason(stub: JiraStub) -> None:
    acts = _activities(stub, SIGNOFF_JIRA_DECLINED_STATUS="Declined")
    opened = await acts.gate_notice(GateNotice(status=_status(), gate=_gate(), event="opened"))
    rejected = _gate(state="rejected", rejections=[ApprovalRecord(by="carol@example.com", channel="jira", at=NOW, reason="error budget spent")])
    await acts.gate_notice(GateNotice(status=_status(), gate=rejected, event="closed"))  # no jira_key: found by labels
    issue = stub.issues[opened.key]
    assert issue.status == "Declined"
    assert "rejected by carol@example.com: error budget spent" in issue.comments[0]["body"]


async def test_closing_a_gate_without_a_ticket_is_a_no_op(stub: JiraStub) -> None:
    ref = await _activities(stub).gate_notice(GateNotice(status=_status(), gate=_gate(state="approved"), event="closed"))
    assert ref == ChatRef() and stub.issues == {} and stub.requests_to("POST", r".*") == []


async def test_progress_comments_are_not_repeated(stub: JiraStub) -> None:
    acts = _activities(stub)
    await acts.gate_notice(GateNotice(status=_status(), gate=_gate(), event="opened"))
    one = _gate(approvals=[ApprovalRecord(by="alice@example.com", channel="slack", at=NOW)], progress="1 of 2: alice")
    for _ in range(2):
        await acts.gate_notice(GateNotice(status=_status(), gate=one, event="progress"))
    await acts.gate_notice(GateNotice(status=_status(), gate=one.model_copy(update={"reminders_sent": 1}), event="reminder"))
    bodies = [c["body"] for c in stub.issues["REL-1"].comments]
    assert len(bodies) == 2 and "1 of 2: alice" in bodies[0] and bodies[1].startswith("Reminder")


def _rolled_back() -> NotifyRequest:
    status = _status()
    status.phase = Phase.rolled_back
    status.outcome = "rolled_back"
    status.gates = [_gate(state="approved", approvals=[ApprovalRecord(by="alice@example.com", channel="jira", at=NOW)])]
    status.canary = CanaryStatus(
        step=2,
        weight=20,
        verdict="failed",
        analyses=[
            Measurement(metric="error-rate", value=0.004, verdict="successful", step=1),
            Measurement(metric="error-rate", value=0.21, verdict="failed", step=2, message="0.21 >= 0.05", query='rate(errors{digest="sha256:ab"}[1m])', condition="failure: >= 0.05"),
            Measurement(metric="latency-p99", value=None, verdict="inconclusive", step=2, message="empty result"),
        ],
    )
    return NotifyRequest(release_id=status.release_id, kind="incident", text="error-rate failed 1 of 1 (limit 0)", status=status)


async def test_incident_ticket_opened_once_with_the_evidence(stub: JiraStub) -> None:
    acts = _activities(stub, SIGNOFF_JIRA_INCIDENT_ISSUE_TYPE="Incident")
    req = _rolled_back()
    first = await acts.open_incident(req)
    second = await acts.open_incident(req)
    assert first.key == second.key == "REL-1"
    [create] = stub.requests_to("POST", r"/rest/api/2/issue")
    fields = create.body["fields"]
    assert fields["issuetype"] == {"name": "Incident"}
    assert "signoff-incident-rel-checkout-7f3a" in fields["labels"]
    assert not any(label.startswith("signoff-release-") for label in fields["labels"])  # not an approval ticket
    assert fields["summary"].startswith("Rollback: checkout release rel-checkout-7f3a")
    text = fields["description"]
    for evidence in (
        "error-rate failed 1 of 1 (limit 0)",
        DIGEST,
        PREVIOUS,
        '|error-rate|2 |rate(errors\\{digest="sha256:ab"\\}[1m])|0.21|failure: >= 0.05|failed|0.21 >= 0.05|',  # the resolved query and the threshold
        "|error-rate|1 | |0.004| |successful| |",
        "|latency-p99|2 | |no data| |inconclusive|empty result|",
        "verdict failed",
        "alice@example.com",
        "signoff audit show rel-checkout-7f3a",
        "signoff audit verify rel-checkout-7f3a",
        "http://temporal-ui.test:8233/namespaces/default/workflows/rel-checkout-7f3a",
    ):
        assert evidence in text, evidence


async def test_incident_for_a_failed_runbook_without_release_status(stub: JiraStub) -> None:
    ref = await _activities(stub).open_incident(NotifyRequest(release_id="run-restart-42", kind="runbook_failed", text="post-check error-rate failed"))
    assert ref.key == "REL-1"
    fields = stub.requests_to("POST", r"/rest/api/2/issue")[0].body["fields"]
    assert fields["summary"] == "Runbook failed: run-restart-42: post-check error-rate failed"
    assert "signoff-incident-run-restart-42" in fields["labels"]
    assert "post-check error-rate failed" in fields["description"]


async def test_workflow_sees_a_non_retryable_failure_for_bad_settings(dev_env: WorkflowEnvironment, task_queue: str, stub: JiraStub) -> None:
    acts = _activities(stub, SIGNOFF_JIRA_TOKEN="wrong")
    async with Worker(dev_env.client, task_queue=task_queue, workflows=[JiraNoticeProbe], activities=[acts.gate_notice], workflow_runner=UnsandboxedWorkflowRunner()):
        with pytest.raises(WorkflowFailureError):
            await dev_env.client.execute_workflow(
                JiraNoticeProbe.run,
                GateNotice(status=_status(), gate=_gate(), event="opened"),
                id=f"jira-probe-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=30),
            )
    # one attempt only: credentials do not fix themselves
    assert len([r for r in stub.requests if r.path.endswith("serverInfo")]) == 1
