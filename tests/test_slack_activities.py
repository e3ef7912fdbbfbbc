"""slack_gate_notice / slack_notify against the local Slack Web API stub.

Idempotency is tested the way it matters: the same activity attempt retried by a real
Temporal worker (dev server) after Slack failed, and the same notice delivered twice.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.slack import SlackActivities, activities_from_settings
from signoff.slack_blocks import ACTIONS_BLOCK, APPROVE_ACTION, PROGRESS_BLOCK, REJECT_ACTION
from signoff.slack_config import SlackConfig, make_web_client, service_channel_variable
from signoff.config import Settings
from signoff.models import (
    AgentInfo,
    ApprovalRecord,
    ChatRef,
    GateNotice,
    GateStatus,
    NotifyRequest,
    Phase,
    PolicyDecision,
    ReleaseStatus,
    TestSummary,
)
from tests.stubs.slack_stub import SlackStub

DIGEST = "sha256:" + "ef" * 32
DIRECTORY = """
people:
  - {email: alice@example.com, name: Alice Archer, slack_user_id: U0ALICE}
  - {email: bob@example.com, name: Bob Baker, slack_user_id: U0BOB}
  - {email: carol@example.com, name: Carol Cole, slack_user_id: U0CAROL}
  - {email: dana@example.com, name: Dana Dev, slack_user_id: U0DANA}
groups:
  release-managers: [alice@example.com, bob@example.com]
  sre: [carol@example.com]
"""
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def stub() -> Any:
    s = SlackStub().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    d = tmp_path / "approvers.yaml"
    d.write_text(DIRECTORY)
    return Settings(state_dir=tmp_path / "state", directory_path=d, ui_url="http://ui.test:8233", namespace="default")


def make_acts(settings: Settings, stub: SlackStub) -> SlackActivities:
    config = SlackConfig(bot_token="xoxb-test", api_url=stub.api_url, default_channel="C0DEFAULT", service_channels={"CHECKOUT": "C0CHECKOUT"})
    return SlackActivities(settings, make_web_client(config), config=config)


def notice(event: str = "opened", *, state: str = "open", approvals: list[str] | None = None, ts: str | None = None, reminders: int = 0, escalate_to: str | None = None) -> GateNotice:
    gate = GateStatus(
        name="production",
        state=state,  # type: ignore[arg-type]
        required=2,
        from_groups=["release-managers"],
        approvals=[ApprovalRecord(by=a, channel="slack", at=AT) for a in approvals or []],
        opened_at=AT,
        reminders_sent=reminders,
        slack_channel="C0CHECKOUT" if ts else None,
        slack_ts=ts,
    )
    status = ReleaseStatus(
        release_id="rel-checkout-1a2b",
        service="checkout",
        artifact_digest=DIGEST,
        phase=Phase.awaiting_approval,
        tier="high",
        requested_by="dana@example.com",
        agent=AgentInfo(id="release-bot", model="gpt-x", prompt_sha256="f" * 64),
        change_summary="Raise checkout timeout <!channel> & retry <https://evil.test|docs>",
        tests=TestSummary(passed=41, failed=0, skipped=2, coverage=87.5),
        policy=PolicyDecision(tier="high", reasons=["touches payments/", "requested by an agent"]),
        gates=[gate],
    )
    return GateNotice(status=status, gate=gate, event=event, escalate_to=escalate_to)  # type: ignore[arg-type]


async def test_opened_posts_block_kit_with_the_evidence(settings: Settings, stub: SlackStub) -> None:
    acts = make_acts(settings, stub)
    ref = await ActivityEnvironment().run(acts.gate_notice, notice())
    posted = stub.calls("chat.postMessage")
    assert len(posted) == 1 and ref.channel == "C0CHECKOUT" and ref.ts and ref.ts.startswith("17")
    body = posted[0].body
    assert body["channel"] == "C0CHECKOUT"  # per-service channel wins over the default
    text = json.dumps(body["blocks"])
    for evidence in ["checkout", "rel-checkout-1a2b", DIGEST, "dana@example.com", "release-bot", "gpt-x", "ffffffffffffffff",
                     "41 passed, 0 failed, 2 skipped", "87.5%", "high", "touches payments/", "requested by an agent",
                     "http://ui.test:8233/namespaces/default/workflows/rel-checkout-1a2b", "<@U0ALICE>", "<@U0BOB>", "0 of 2"]:
        assert evidence in text, evidence
    # agent-written text cannot ping the channel or smuggle a link
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "<https://evil.test" not in text
    actions = next(b for b in body["blocks"] if b.get("block_id") == ACTIONS_BLOCK)["elements"]
    assert [a["action_id"] for a in actions] == [APPROVE_ACTION, REJECT_ACTION]
    assert json.loads(actions[0]["value"]) == {"release_id": "rel-checkout-1a2b", "gate": "production", "digest": DIGEST}
    assert body["metadata"] == {"event_type": "signoff_gate", "event_payload": {"release_id": "rel-checkout-1a2b", "gate": "production"}}
    assert posted[0].headers["authorization"] == "Bearer xoxb-test"


async def test_opened_twice_posts_once(settings: Settings, stub: SlackStub) -> None:
    first = await ActivityEnvironment().run(make_acts(settings, stub).gate_notice, notice())
    # a fresh instance (a restarted worker) with the same state dir
    second = await ActivityEnvironment().run(make_acts(settings, stub).gate_notice, notice())
    assert first == second and len(stub.calls("chat.postMessage")) == 1


@workflow.defn(name="SlackNoticeTestWorkflow", sandboxed=False)
class SlackNoticeTestWorkflow:
    """Calls the activity by name with a fast retry policy, as the ReleaseWorkflow does."""

    @workflow.run
    async def run(self, n: GateNotice) -> ChatRef:
        return await workflow.execute_activity(
            "slack_gate_notice",
            n,
            result_type=ChatRef,
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
        )


async def test_retried_activity_posts_once_after_slack_errors(client: Client, task_queue: str, settings: Settings, stub: SlackStub) -> None:
    stub.fail_next("chat.postMessage", status=500, count=2)  # the client retries once, then Temporal retries
    acts = make_acts(settings, stub)
    async with Worker(client, task_queue=task_queue, workflows=[SlackNoticeTestWorkflow], activities=[acts.gate_notice, acts.notify]):
        ref = await client.execute_workflow(SlackNoticeTestWorkflow.run, notice(), id=f"wf-{task_queue}", task_queue=task_queue)
        again = await client.execute_workflow(SlackNoticeTestWorkflow.run, notice(), id=f"wf2-{task_queue}", task_queue=task_queue)
    calls = stub.calls("chat.postMessage")
    assert len(calls) == 3  # two answered 500, one accepted
    assert ref.ts is not None and again == ref


async def test_rate_limit_is_honoured_and_permanent_errors_do_not_retry(client: Client, task_queue: str, settings: Settings, stub: SlackStub) -> None:
    stub.fail_next("chat.postMessage", status=429, retry_after=1, count=1)
    acts = make_acts(settings, stub)
    ref = await ActivityEnvironment().run(acts.gate_notice, notice())
    calls = stub.calls("chat.postMessage")
    assert len(calls) == 2 and calls[1].at - calls[0].at >= 0.9 and ref.ts
    stub.error_next("chat.postMessage", "channel_not_found", count=10)
    async with Worker(client, task_queue=task_queue, workflows=[SlackNoticeTestWorkflow], activities=[acts.gate_notice]):
        other = notice()
        other.status.release_id = other.gate.name = "rel-other"  # a new key, so it really posts
        with pytest.raises(WorkflowFailureError) as err:
            await client.execute_workflow(SlackNoticeTestWorkflow.run, other, id=f"wf-{task_queue}", task_queue=task_queue)
    cause = err.value.cause.cause  # type: ignore[union-attr]
    assert isinstance(cause, ApplicationError) and cause.non_retryable and "channel_not_found" in cause.message
    assert len(stub.calls("chat.postMessage")) == 3  # exactly one more attempt: not retried


async def test_progress_and_close_edit_the_message_in_place(settings: Settings, stub: SlackStub) -> None:
    acts = make_acts(settings, stub)
    ref = await ActivityEnvironment().run(acts.gate_notice, notice())
    await ActivityEnvironment().run(acts.gate_notice, notice("progress", approvals=["alice@example.com"], ts=ref.ts))
    await ActivityEnvironment().run(acts.gate_notice, notice("closed", state="approved", approvals=["alice@example.com", "bob@example.com"], ts=ref.ts))
    updates = [c.body for c in stub.calls("chat.update")]
    assert [(u["channel"], u["ts"]) for u in updates] == [("C0CHECKOUT", ref.ts)] * 2
    progress = next(b for b in updates[0]["blocks"] if b.get("block_id") == PROGRESS_BLOCK)["text"]["text"]
    assert "1 of 2 — Alice ✅" in progress
    assert any(b.get("block_id") == ACTIONS_BLOCK for b in updates[0]["blocks"])
    closed = updates[1]["blocks"]
    assert not any(b.get("block_id") == ACTIONS_BLOCK for b in closed)
    assert "Approved" in json.dumps(closed) and "Alice ✅, Bob ✅" in json.dumps(closed, ensure_ascii=False)
    assert len(stub.calls("chat.postMessage")) == 1


async def test_reminder_in_thread_and_escalation_to_the_group(settings: Settings, stub: SlackStub) -> None:
    acts = make_acts(settings, stub)
    ref = await ActivityEnvironment().run(acts.gate_notice, notice())
    await ActivityEnvironment().run(acts.gate_notice, notice("reminder", approvals=["alice@example.com"], ts=ref.ts, reminders=1))
    await ActivityEnvironment().run(acts.gate_notice, notice("reminder", approvals=["alice@example.com"], ts=ref.ts, reminders=1))  # retry
    await ActivityEnvironment().run(acts.gate_notice, notice("escalation", ts=ref.ts, escalate_to="sre"))
    posts = [c.body for c in stub.calls("chat.postMessage")]
    assert len(posts) == 3
    reminder, escalation = posts[1], posts[2]
    assert reminder["thread_ts"] == ref.ts and "<@U0BOB>" in reminder["text"] and "<@U0ALICE>" not in reminder["text"]
    assert "thread_ts" not in escalation and "<@U0CAROL>" in escalation["text"] and escalation["channel"] == "C0CHECKOUT"


async def test_notify_uses_the_service_channel_and_mentions(settings: Settings, stub: SlackStub) -> None:
    acts = make_acts(settings, stub)
    status = notice().status
    ref = await ActivityEnvironment().run(acts.notify, NotifyRequest(release_id=status.release_id, kind="rollback", text="canary failed: error-rate 0.12 > 0.05; rolled back", status=status, mention=["sre", "alice@example.com"]))
    body = stub.calls("chat.postMessage")[0].body
    assert ref.channel == "C0CHECKOUT" and "rolled back" in body["text"] and "<@U0CAROL>" in body["text"] and "<@U0ALICE>" in body["text"]
    assert "rel-checkout-1a2b" in body["text"]


async def test_without_a_bot_token_nothing_is_posted(settings: Settings, stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_SLACK_API_URL", stub.api_url)  # even with an API URL, no token = silent
    acts = activities_from_settings(settings)
    assert [a.__name__ for a in acts] == ["gate_notice", "notify"]
    ref = await ActivityEnvironment().run(acts[0], notice())
    assert ref == ChatRef() and stub.requests == []


def test_service_channel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_SLACK_CHANNEL", "C0DEFAULT")
    monkeypatch.setenv(service_channel_variable("checkout-api"), "C0CHECKOUTAPI")
    config = SlackConfig.from_env()
    assert service_channel_variable("checkout-api") == "SIGNOFF_SLACK_CHANNEL_CHECKOUT_API"
    assert config.channel_for("checkout-api") == "C0CHECKOUTAPI" and config.channel_for("billing") == "C0DEFAULT"
