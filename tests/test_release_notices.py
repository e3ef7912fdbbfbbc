"""A notice that never reaches people (Slack refuses it for good) does not block the release,
and is not invisible either: it is in the status history and in the signed decision log."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client

from signoff.audit import show, store_from_settings
from signoff.config import Settings
from tests.helpers import gated_spec, running_worker, wait_for
from tests.stubs.slack_stub import SlackStub

pytestmark = pytest.mark.asyncio


async def test_failed_slack_notice_is_recorded_and_release_goes_on(client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = SlackStub().start()
    try:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-n")
        monkeypatch.setenv("SIGNOFF_SLACK_API_URL", stub.api_url)
        monkeypatch.setenv("SIGNOFF_SLACK_CHANNEL", "C0GONE")
        stub.error_next("chat.postMessage", "channel_not_found", count=10)
        settings = Settings.from_env()
        async with running_worker(client, task_queue, settings=settings) as sc:
            rid = f"notice-{uuid.uuid4().hex[:6]}"
            await sc.start_release(gated_spec(required=1), release_id=rid)
            status = await wait_for(sc, rid, lambda s: any("notice_failed" in h for h in s.history), timeout=60)
            assert status.phase.value == "awaiting_approval"
            failed = next(h for h in status.history if "notice_failed" in h)
            assert failed["notice_failed"] == "slack" and "channel_not_found" in failed["reason"]
            from signoff.models import ApprovalAttempt

            await sc.submit_approval(ApprovalAttempt(release_id=rid, identity="alice@example.com", channel="cli"))
            await sc.handle(rid).result()
        rows = show(rid, store_from_settings(settings))
        assert any(r["kind"] == "notification" and r["outcome"] == "failed" for r in rows)
        assert [r["outcome"] for r in rows if r["kind"] == "release_outcome"] == ["succeeded"]
    finally:
        stub.stop()
