"""The same person approving in Slack *and* in Jira is counted once — through the real
gateway (both channels mounted), the real ReleaseWorkflow and its real Slack/Jira activities,
with only the two SaaS web APIs stubbed."""

from __future__ import annotations

import os
import json
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from approvals.gateway import create_app
from approvals.jira.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, signature_for
from signoff.config import Settings
from signoff.slack_blocks import ACTIONS_BLOCK, APPROVE_ACTION
from tests.helpers import REPO, gated_spec, running_worker, wait_for, wait_phase
from tests.stubs.jira_stub import JiraStub
from tests.stubs.slack_stub import APP_ID, TEAM_ID, SlackStub, signed_headers
from tests.test_slack_app import SECRET as SLACK_SECRET
from tests.test_slack_app import click_body, serve

pytestmark = pytest.mark.asyncio
JIRA_SECRET = "cross-channel-jira-secret"


async def test_same_person_in_slack_and_jira_counts_once(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "approvers.yaml"
    shutil.copy(Path(os.environ["SIGNOFF_STATE_DIR"]) / "dev" / "approvers.yaml", directory)
    slack = SlackStub().start()
    try:
        with JiraStub() as jira:
            env = {
                "SIGNOFF_DIRECTORY": str(directory),
                "SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": SLACK_SECRET, "SIGNOFF_SLACK_API_URL": slack.api_url,
                "SIGNOFF_SLACK_CHANNEL": "C0REL", "SIGNOFF_SLACK_TEAM_ID": TEAM_ID, "SIGNOFF_SLACK_APP_ID": APP_ID,
                "SIGNOFF_JIRA_URL": jira.url, "SIGNOFF_JIRA_USER": jira.user, "SIGNOFF_JIRA_TOKEN": jira.token,
                "SIGNOFF_JIRA_PROJECT": jira.project, "SIGNOFF_JIRA_WEBHOOK_SECRET": JIRA_SECRET,
            }
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            settings = Settings.from_env()
            async with running_worker(client, task_queue, settings=settings) as signoff:
                async with serve(create_app(settings, client=signoff)) as base:
                    rid = f"rel-x-{uuid.uuid4().hex[:8]}"
                    await signoff.start_release(gated_spec(), release_id=rid)
                    await wait_phase(signoff, rid, "awaiting_approval")
                    status = await wait_for(signoff, rid, lambda s: bool(s.gates[0].slack_ts and s.gates[0].jira_key), timeout=30)
                    gate = status.gates[0]

                    # alice clicks Approve in Slack
                    posted = slack.calls("chat.postMessage")[0].body
                    buttons = next(b for b in posted["blocks"] if b.get("block_id") == ACTIONS_BLOCK)["elements"]
                    value = next(b["value"] for b in buttons if b["action_id"] == APPROVE_ACTION)
                    body = click_body(rid, "U0ALICE", value=value, message_ts=gate.slack_ts, channel="C0REL")
                    async with httpx.AsyncClient(timeout=20) as http:
                        r = await http.post(f"{base}/slack/events", content=body, headers=signed_headers(SLACK_SECRET, body))
                        assert r.status_code == 200
                        await slack.until("chat.postEphemeral", 1, timeout=20)

                        # …and alice also transitions the Jira ticket to Approved
                        payload = jira.transition_webhook(gate.jira_key, "Approved", account_id="jira-alice-0001")
                        raw = json.dumps(payload).encode()
                        r = await http.post(
                            f"{base}/jira/webhook",
                            content=raw,
                            headers={SIGNATURE_HEADER: signature_for(raw, JIRA_SECRET), DELIVERY_HEADER: f"d-{uuid.uuid4().hex}", "content-type": "application/json"},
                        )
                        assert r.status_code in (200, 202), r.text
                    after = await signoff.status(rid)
                    assert [a.by for a in after.gates[0].approvals] == ["alice@example.com"]
                    assert after.gates[0].state == "open" and after.phase.value == "awaiting_approval"

                    # bob approves on a decoy ticket carrying the gate's labels: the workflow refuses it
                    decoy = jira.comment_webhook(gate.jira_key, "/approve via my own ticket", account_id="jira-bob-0002")
                    decoy["issue"]["key"] = "REL-999"
                    raw = json.dumps(decoy).encode()
                    async with httpx.AsyncClient(timeout=20) as http:
                        r = await http.post(
                            f"{base}/jira/webhook",
                            content=raw,
                            headers={SIGNATURE_HEADER: signature_for(raw, JIRA_SECRET), DELIVERY_HEADER: f"d-{uuid.uuid4().hex}", "content-type": "application/json"},
                        )
                    assert r.status_code == 200 and r.json()["accepted"] is False, r.text
                    assert f"Jira ticket REL-999 is not gate production's ticket ({gate.jira_key})" in r.json()["reason"]
                    refused = await signoff.status(rid)
                    assert [a.by for a in refused.gates[0].approvals] == ["alice@example.com"] and refused.gates[0].refusals[-1].by == "bob@example.com"

                    # bob's approval (via Jira comment) completes the gate
                    payload = jira.comment_webhook(gate.jira_key, "/approve looks good", account_id="jira-bob-0002")
                    raw = json.dumps(payload).encode()
                    async with httpx.AsyncClient(timeout=20) as http:
                        r = await http.post(
                            f"{base}/jira/webhook",
                            content=raw,
                            headers={SIGNATURE_HEADER: signature_for(raw, JIRA_SECRET), DELIVERY_HEADER: f"d-{uuid.uuid4().hex}", "content-type": "application/json"},
                        )
                        assert r.status_code in (200, 202), r.text
                    done = await wait_phase(signoff, rid, "succeeded", timeout=60)
                    assert sorted((a.by, a.channel) for a in done.gates[0].approvals) == [("alice@example.com", "slack"), ("bob@example.com", "jira")]
                    assert len(jira.issues_with_label(f"signoff-release-{rid}")) == 1
    finally:
        slack.stop()
