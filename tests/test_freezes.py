"""Change freezes on the real dev server: only the policy's freeze groups may start or end one
(signed requests), a freeze holds a release that passed its gate in waiting_for_window, and
ending it releases the release at once. Every freeze and refusal is in the signed log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from typing import Iterator

import pytest
from temporalio.client import Client

from signoff.audit import show, store_from_settings
from signoff.config import Settings
from signoff.errors import Refused
from signoff.models import ApprovalAttempt
from signoff.windows import freezes_id
from tests.stubs.slack_stub import SlackStub
from tests.helpers import DIGEST_A, gated_spec, release_spec, running_worker, wait_for, wait_phase, worker_slack

pytestmark = pytest.mark.asyncio


async def cli(client: Client, task_queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a thread, so the in-process worker keeps answering meanwhile."""
    env = {**os.environ, "SIGNOFF_TEMPORAL_ADDRESS": client.service_client.config.target_host, "SIGNOFF_TASK_QUEUE": task_queue}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from signoff.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStub]:
    """The local Slack stub as the worker's Slack."""
    with worker_slack(monkeypatch, token="xoxb-f") as stub:
        yield stub


async def test_freeze_holds_an_approved_release_until_it_ends(client: Client, task_queue: str, slack: SlackStub) -> None:
    async with running_worker(client, task_queue) as sc:
        # dana is a developer: the policy's freeze groups are release-managers and sre
        with pytest.raises(Refused, match="not in the groups that may start or end a freeze"):
            await sc.freeze_start(identity="dana@example.com", reason="I want quiet")
        started = await sc.freeze_start(identity="carol@example.com", reason="payments incident", service="checkout")
        freeze_id = started["freeze"]["id"]
        assert [f["id"] for f in await sc.freeze_status()] == [freeze_id]

        rid = f"frz-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        for who in ("alice@example.com", "bob@example.com"):
            assert (await sc.submit_approval(ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A))).accepted
        held = await wait_phase(sc, rid, "waiting_for_window")
        assert held.gates[0].state == "approved"
        assert held.window is not None and held.window.freezes == [freeze_id]
        assert any("payments incident" in r for r in held.window.reasons)

        listed = await cli(client, task_queue, "release", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [f["id"] for f in json.loads(listed.stdout)["freezes"]] == [freeze_id]

        with pytest.raises(Refused, match="not in the groups"):
            await sc.freeze_end(identity="dana@example.com")
        assert (await sc.status(rid)).phase.value == "waiting_for_window"
        ended = await cli(client, task_queue, "freeze", "end", "--as", "alice@example.com", "--json")
        assert ended.returncode == 0, ended.stdout + ended.stderr
        assert json.loads(ended.stdout)["ended"] == [freeze_id]
        done = await wait_phase(sc, rid, "succeeded", timeout=30)
        assert done.window is not None and done.window.open
        await sc.handle(rid).result()  # every record written

    posted = [c.body["text"] for c in slack.calls("chat.postMessage")]
    assert any(f"freeze {freeze_id} started by carol@example.com" in t and "payments incident" in t for t in posted)
    assert any(f"freeze {freeze_id}" in t and "ended by alice@example.com" in t for t in posted)
    assert any("approved, but promotion waits" in t for t in posted) and any("promotion resumes" in t for t in posted)
    store = store_from_settings(Settings.from_env())
    freeze_rows = [(r["kind"], r["outcome"], r.get("who")) for r in show(freezes_id(task_queue), store)]
    assert ("freeze", "refused", "dana@example.com") in freeze_rows
    assert ("freeze", "started", "carol@example.com") in freeze_rows and ("freeze", "ended", "alice@example.com") in freeze_rows
    rows = show(rid, store)
    # the policy decided with the window state in its input, and said why promotion would wait
    policy = next(r for r in rows if r["kind"] == "policy")
    assert policy["evidence"]["input"]["window"]["open"] is False and policy["evidence"]["input"]["window"]["freezes"] == [freeze_id]
    assert "promotion waits: freeze by carol@example.com: payments incident" in policy["why"]
    kinds = [(r["kind"], r["outcome"]) for r in rows]
    assert kinds.index(("window", "waiting")) < kinds.index(("window", "resumed")) < kinds.index(("promotion", "started"))


async def test_freeze_requests_are_proven_and_bad_input_is_one_sentence(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        # a proof signed for other settings (a narrower scope) cannot start a global freeze
        proof = sc.sign("person", "carol@example.com", action="freeze_start", subject="freezes", body={"reason": "x", "service": "checkout", "environment": None, "until": None, "pause_canaries": False})
        handle = await client.start_workflow("FreezeWorkflow", None, id=freezes_id(task_queue), task_queue=task_queue)
        from temporalio.client import WorkflowUpdateFailedError

        with pytest.raises(WorkflowUpdateFailedError) as e:
            await handle.execute_update("start_freeze", {"identity": "carol@example.com", "reason": "x", "proof": proof.model_dump(mode="json")}, result_type=dict)
        assert "the proof was made for body" in str(e.value.cause)
        assert await sc.freeze_status() == []
        bad = await cli(client, task_queue, "freeze", "start", "--as", "carol@example.com", "--reason", "x", "--until", "next tuesday")
        assert bad.returncode == 1 and "neither an ISO time" in bad.stderr and "Traceback" not in bad.stderr
        none = await cli(client, task_queue, "freeze", "end", "--as", "carol@example.com")
        assert none.returncode == 1 and "no freeze is in force" in none.stderr, none.stderr


async def test_freeze_with_pause_canaries_holds_a_running_canary_at_its_weight(client: Client, task_queue: str) -> None:
    steps = {"steps": [{"set_weight": 20}, {"pause": {}}, {"set_weight": 50}, {"set_weight": 80}]}
    async with running_worker(client, task_queue) as sc:
        rid = f"frz-canary-{uuid.uuid4().hex[:6]}"
        await sc.start_release(release_spec(canary=steps), release_id=rid)
        await wait_for(sc, rid, lambda s: bool(s.canary and s.canary.paused and s.canary.weight == 20))
        await sc.freeze_start(identity="carol@example.com", reason="peak traffic", pause_canaries=True)
        # the keeper signals the running release, which re-reads the freezes
        await wait_for(sc, rid, lambda s: bool(s.canary and "peak traffic" in s.canary.pause_reason))
        await sc.promote(rid, identity="alice@example.com")  # the pause step ends, but the freeze holds the canary
        await asyncio.sleep(3)
        held = await sc.status(rid)
        assert held.phase.value == "canary" and held.canary is not None and held.canary.weight == 20
        assert held.canary.paused and "peak traffic" in held.canary.pause_reason
        await sc.freeze_end(identity="alice@example.com")
        done = await wait_phase(sc, rid, "succeeded", timeout=30)
        await sc.handle(rid).result()
    kinds = [(r["kind"], r["outcome"]) for r in show(rid, store_from_settings(Settings.from_env()))]
    assert kinds.index(("canary_freeze", "paused")) < kinds.index(("canary_freeze", "resumed"))
    assert done.canary is not None and done.canary.weight == 100


async def test_releases_read_freezes_without_the_worker_and_register_only_when_waiting(client: Client, task_queue: str) -> None:
    """The freezes in force are in the keeper's memo: `load_windows` answers from a describe,
    which needs no worker (a query waited seconds behind thousands of releases, holding each
    closing approval's workflow task open). A release that passes an open window never joins the
    keeper's watch list."""
    from temporalio.testing import ActivityEnvironment

    from activities.windows import WindowActivities
    from signoff.windows import WindowRequest

    async with running_worker(client, task_queue) as sc:
        rid = f"frz-open-{uuid.uuid4().hex[:6]}"
        await sc.start_release(gated_spec(), release_id=rid)
        await wait_phase(sc, rid, "awaiting_approval")
        for who in ("alice@example.com", "bob@example.com"):
            assert (await sc.submit_approval(ApprovalAttempt(release_id=rid, identity=who, channel="cli", digest=DIGEST_A))).accepted
        await wait_phase(sc, rid, "succeeded", timeout=30)
        started = await sc.freeze_start(identity="carol@example.com", reason="quarter close", service="checkout")
        keeper = client.get_workflow_handle(freezes_id(task_queue))
        assert [f["id"] for f in await (await keeper.describe()).memo_value("freezes")] == [started["freeze"]["id"]]
        watched = [e for e in [ev async for ev in keeper.fetch_history_events()] if e.HasField("workflow_execution_signaled_event_attributes")]
        assert rid not in json.dumps([str(e) for e in watched]), "a release that never waited registered with the keeper"

    # No worker polls the task queue now: a query would wait until it timed out.
    env = ActivityEnvironment(client=client)
    env.info = dataclasses.replace(env.info, task_queue=task_queue)
    request = WindowRequest(release_id="probe", service="checkout", environment="production", watch=False)
    config = await asyncio.wait_for(env.run(WindowActivities(Settings.from_env()).load_windows, request), timeout=5)
    assert [f.id for f in config.freezes] == [started["freeze"]["id"]]
