"""A certified runbook run from a signed Slack slash command, its progress posted in a thread;
refusals answered in chat. Real gateway, workflow, activities and Prometheus; Slack's Web API
is the local stub."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.client import Client

from approvals.gateway import create_app
from signoff.config import Settings
from tests.helpers import running_worker
from tests.stubs.slack_stub import APP_ID, TEAM_ID, SlackStub, signed_headers
from tests.test_runbook_workflow import books, flag_file, prometheus  # noqa: F401 - fixtures
from tests.test_slack_app import SECRET, serve

pytestmark = pytest.mark.asyncio
CHANNEL = "C0ONCALL"


def slash(stub: SlackStub, text: str, user: str) -> bytes:
    return urlencode({
        "token": "legacy", "team_id": TEAM_ID, "api_app_id": APP_ID, "channel_id": CHANNEL, "user_id": user,
        "user_name": user.lower(), "command": "/signoff", "text": text,
        "response_url": stub.response_url(uuid.uuid4().hex[:8]), "trigger_id": "1.2.3",
    }).encode()


async def test_runbook_from_slash_command_posts_progress(client: Client, task_queue: str, books: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    stub = SlackStub().start()
    try:
        for key, value in {
            "SLACK_BOT_TOKEN": "xoxb-rb", "SLACK_SIGNING_SECRET": SECRET, "SIGNOFF_SLACK_API_URL": stub.api_url,
            "SIGNOFF_SLACK_CHANNEL": "C0RELEASES", "SIGNOFF_SLACK_TEAM_ID": TEAM_ID, "SIGNOFF_SLACK_APP_ID": APP_ID,
        }.items():
            monkeypatch.setenv(key, value)
        settings = Settings.from_env()
        async with running_worker(client, task_queue, settings=settings) as signoff:
            async with serve(create_app(settings, client=signoff)) as base:
                async with httpx.AsyncClient(timeout=20) as http:
                    # an outsider is refused, with the reason, and nothing changes
                    body = slash(stub, "runbook run flip-flag service=checkout", "U0DANA")
                    r = await http.post(f"{base}/slack/events", content=body, headers=signed_headers(SECRET, body))
                    assert r.status_code == 200 and r.elapsed.total_seconds() < 3
                    refusal = (await stub.until("response_url", 1, timeout=30))[0].body["text"]
                    assert "refused" in refusal and "on-call" in refusal
                    assert not flag_file().exists()

                    # a forged command changes nothing
                    forged = slash(stub, "runbook run flip-flag service=checkout", "U0CAROL")
                    r = await http.post(f"{base}/slack/events", content=forged, headers=signed_headers("wrong-secret", forged))
                    assert r.status_code == 401

                    # carol (on-call) runs it
                    body = slash(stub, "runbook run flip-flag service=checkout enabled=false", "U0CAROL")
                    r = await http.post(f"{base}/slack/events", content=body, headers=signed_headers(SECRET, body))
                    assert r.status_code == 200 and r.elapsed.total_seconds() < 3
                    answer = (await stub.until("response_url", 2, timeout=30))[1].body["text"]
                    run_id = re.search(r"started as `([^`]+)`", answer).group(1)  # type: ignore[union-attr]
            await client.get_workflow_handle(run_id).result()
            done = await signoff.runbooks.status(run_id)
        assert done.phase == "succeeded" and done.channel == "slack" and done.requested_by == "carol@example.com"
        assert flag_file().exists()
        head = next(c for c in stub.calls("chat.postMessage") if c.body.get("channel") == CHANNEL and "thread_ts" not in c.body and "flip-flag" in c.body.get("text", "") and "carol" in c.body.get("text", ""))
        head_ts = head.response["ts"]  # type: ignore[index]
        thread = [c.body["text"] for c in stub.calls("chat.postMessage") if c.body.get("thread_ts") == head_ts]
        assert any("step flip" in t for t in thread) and any("succeeded" in t for t in thread), thread
    finally:
        stub.stop()
