"""End to end: the real ReleaseWorkflow with a two-of-release-managers gate, approved by two
Slack clicks through the real gateway over HTTP, with the requester's click refused.

Everything is real except Slack's Web API (the local stub): the dev server, the worker with
every real activity (deploy target `command`), our slack activities posting the approval
request, the gateway app (`approvals.gateway.create_app`) served by uvicorn, bolt's signature
verification, the submit_approval Update.
"""

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
from signoff.slack_blocks import ACTIONS_BLOCK, APPROVE_ACTION, PROGRESS_BLOCK
from signoff.config import Settings
from tests.helpers import DIGEST_A, REPO, gated_spec, running_worker, wait_for, wait_phase
from tests.stubs.slack_stub import APP_ID, TEAM_ID, SlackStub, signed_headers
from tests.test_slack_app import SECRET, click_body, ephemerals, serve

CHANNEL = "C0RELEASES"


@pytest.fixture
def stub() -> object:
    s = SlackStub().start()
    try:
        yield s
    finally:
        s.stop()


async def test_gated_release_reaches_quorum_by_two_slack_clicks(client: Client, task_queue: str, tmp_path: Path, stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "approvers.yaml"
    shutil.copy(Path(os.environ["SIGNOFF_STATE_DIR"]) / "dev" / "approvers.yaml", directory)
    monkeypatch.setenv("SIGNOFF_DIRECTORY", str(directory))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-e2e")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SIGNOFF_SLACK_API_URL", stub.api_url)
    monkeypatch.setenv("SIGNOFF_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("SIGNOFF_SLACK_TEAM_ID", TEAM_ID)
    monkeypatch.setenv("SIGNOFF_SLACK_APP_ID", APP_ID)
    settings = Settings.from_env()

    async with running_worker(client, task_queue, settings=settings) as signoff:
        # the real gateway app (approvals/gateway.py), configured from the env above
        async with serve(create_app(settings, client=signoff)) as base:
            url = f"{base}/slack/events"
            release_id = f"rel-e2e-{uuid.uuid4().hex[:10]}"
            await signoff.start_release(gated_spec(), release_id=release_id)
            await wait_phase(signoff, release_id, "awaiting_approval")

            # the gate's approval request, posted by the real slack_gate_notice activity
            posted_call = (await stub.until("chat.postMessage", 1, timeout=20))[0]
            posted = posted_call.body
            posted_ts = (posted_call.response or {}).get("ts")
            assert posted["channel"] == CHANNEL and release_id in json.dumps(posted["blocks"])
            assert "<@U0ALICE>" in json.dumps(posted["blocks"]) and "<@U0BOB>" in json.dumps(posted["blocks"])
            buttons = next(b for b in posted["blocks"] if b.get("block_id") == ACTIONS_BLOCK)["elements"]
            value = next(b["value"] for b in buttons if b["action_id"] == APPROVE_ACTION)
            plan = (await signoff.status(release_id)).plan_sha256
            assert plan and json.loads(value) == {"release_id": release_id, "gate": "production", "digest": DIGEST_A, "plan": plan}
            # the workflow keeps the message's ts (the activity's result) so later edits target it
            with_ts = await wait_for(signoff, release_id, lambda st: st.gates[0].slack_ts is not None, timeout=20)
            message_ts = with_ts.gates[0].slack_ts
            assert (with_ts.gates[0].slack_channel, message_ts) == (CHANNEL, posted_ts)

            async def click(user: str) -> None:
                body = click_body(release_id, user, value=value, message_ts=message_ts, channel=CHANNEL)
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(url, content=body, headers=signed_headers(SECRET, body))
                assert resp.status_code == 200 and resp.elapsed.total_seconds() < 3.0

            await click("U0DANA")  # the requester
            await stub.until("chat.postEphemeral", 1)
            assert "requester" in ephemerals(stub, "U0DANA")[0] and "not counted" in ephemerals(stub, "U0DANA")[0]

            await click("U0ALICE")
            await stub.until("chat.postEphemeral", 2)
            assert "recorded" in ephemerals(stub, "U0ALICE")[0] and "1 of 2" in ephemerals(stub, "U0ALICE")[0]
            await click("U0BOB")
            await stub.until("chat.postEphemeral", 3)
            assert "recorded" in ephemerals(stub, "U0BOB")[0]

            done = await wait_phase(signoff, release_id, "succeeded", timeout=60)
            gate = done.gates[0]
            assert [(a.by, a.channel) for a in gate.approvals] == [("alice@example.com", "slack"), ("bob@example.com", "slack")]
            assert [r.by for r in gate.refusals] == ["dana@example.com"]

            # one message, edited in place; the last edit shows the outcome without buttons
            assert len([c for c in stub.calls("chat.postMessage") if "blocks" in c.body]) == 1
            updates = [c.body for c in stub.calls("chat.update")]
            assert updates and all((u["channel"], u["ts"]) == (CHANNEL, message_ts) for u in updates)
            closed = [u for u in updates if not any(b.get("block_id") == ACTIONS_BLOCK for b in u["blocks"])]
            assert closed, "the message never lost its buttons"
            progress = next(b for b in closed[-1]["blocks"] if b.get("block_id") == PROGRESS_BLOCK)["text"]["text"]
            assert "Approved" in progress and "Alice ✅" in progress and "Bob ✅" in progress
