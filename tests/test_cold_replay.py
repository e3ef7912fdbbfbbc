"""A release whose every workflow task is rebuilt from its history still reaches its end.

A worker with thousands of releases waiting evicts most of them from its cache, so an approval
usually reaches a release that must be rebuilt from history first. Temporal's core then hands the
last quiet task's results (here: the Slack post of the gate, completed with nothing else to do)
to the workflow in one activation with the approval, and the SDK runs the approval first. The
capacity benchmark caught a release deciding on that order whether to edit its Slack message,
and then failing every later replay, which applies the two in separate activations
("Nondeterminism error: No command scheduled for event ... ActivityTaskScheduled"). A worker that
caches nothing makes every task such a rebuild.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from itertools import groupby
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Replayer

from signoff.converter import data_converter
from signoff.models import ChatRef, GateNotice
from tests.helpers import attested, gated_spec, running_worker, wait_for, wait_phase, with_plan
from tests.test_gates_workflow import attempt
from tests.test_release_canary import STABLE, paused_canary_file
from workers.registry import all_workflows
from workers.worker import workflow_runner

pytestmark = pytest.mark.asyncio


@activity.defn(name="slack_gate_notice")
async def slow_unconfigured_slack(notice: GateNotice) -> ChatRef:
    """Slack without a token posts nothing (no message to edit later); the post finishes last."""
    if notice.event == "opened":
        await asyncio.sleep(1.0)
    return ChatRef()


async def quiet_after_slack_post(client: Client, release_id: str, timeout: float = 60) -> None:
    """Wait until the gate's Slack post has completed and a workflow task after it has completed
    with nothing else pending: the quiet task that a rebuild hands over with the next approval."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = (await client.get_workflow_handle(release_id).fetch_history()).events
        slack = {e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and e.activity_task_scheduled_event_attributes.activity_type.name == "slack_gate_notice"}
        done = [e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and e.activity_task_completed_event_attributes.scheduled_event_id in slack]
        if done and events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and events[-1].event_id > done[-1]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"release {release_id}: the Slack post and a quiet task after it did not happen within {timeout} s")


async def test_a_release_rebuilt_on_every_task_is_approved_and_replays(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue, replace=[slow_unconfigured_slack], max_cached_workflows=0) as sc:
        r = f"rel-cold-{uuid.uuid4().hex[:10]}"
        await sc.start_release(gated_spec(), release_id=r)
        await wait_phase(sc, r, "awaiting_approval", timeout=120)
        await quiet_after_slack_post(client, r)
        first = await sc.submit_approval(attested(await with_plan(sc, attempt(r, "alice@example.com", channel="slack"))))
        assert first.accepted, first.reason
        second = await sc.submit_approval(attempt(r, "bob@example.com", channel="api"))
        assert second.accepted, second.reason
        done = await wait_phase(sc, r, "succeeded", timeout=120)
        assert [a.by for a in done.gates[0].approvals] == ["alice@example.com", "bob@example.com"]

        history = await client.get_workflow_handle(r).fetch_history()
        failed = [e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        assert not failed, f"workflow tasks failed at events {failed}"
        # No edit of a message that was never posted was scheduled.
        edits = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and e.activity_task_scheduled_event_attributes.activity_type.name == "slack_gate_notice"]
        assert len(edits) == 1, f"{len(edits)} Slack gate notices scheduled; only the opening post should be"
    replayed = await Replayer(workflows=all_workflows(), data_converter=data_converter, workflow_runner=workflow_runner()).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_a_canary_rebuilt_at_each_step_is_promoted_aborted_and_replays(client: Client, task_queue: str, tmp_path: Path) -> None:
    """The canary's path with every step taken by a new worker (an empty cache): the pause, the
    promote that ends it and the abort that rolls back each reach a release rebuilt from its
    history. (A worker that caches nothing cannot run this path: the SDK cancels a local activity
    still running when its workflow is evicted and runs it again on replay, so the deploy-window
    check never finishes.)"""
    deploys = tmp_path / "deploys"
    spec = paused_canary_file(deploys)
    r = f"rel-cold-canary-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, task_queue, identity="cold-start") as sc:
        await sc.start_release(spec, release_id=r)
        await wait_for(sc, r, lambda s: bool(s.canary and s.canary.paused), timeout=120)
    async with running_worker(client, task_queue, identity="cold-promote") as sc:
        await sc.promote(r, identity="alice@example.com")
        await wait_for(sc, r, lambda s: bool(s.canary and s.canary.paused and s.canary.weight == 50), timeout=120)
    async with running_worker(client, task_queue, identity="cold-abort") as sc:
        await sc.abort(r, identity="carol@example.com", reason="customer reports")
        done = await wait_for(sc, r, lambda s: s.phase.is_final, timeout=120)
    assert done.phase.value == "aborted" and "customer reports" in (done.reason or "")
    lines = deploys.read_text().split()
    assert lines.count("20") == 1 and lines.count("50") == 1, lines  # a rebuild deploys nothing twice
    assert lines[-2:] == ["rollback", STABLE]

    history = await client.get_workflow_handle(r).fetch_history()
    failed = [e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not failed, f"workflow tasks failed at events {failed}"
    # Each step's workflow tasks ran on its own worker, which held nothing of the release before.
    took = [e.workflow_task_started_event_attributes.identity for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    assert [w for w, _ in groupby(took)] == ["cold-start", "cold-promote", "cold-abort"], took
    replayed = await Replayer(workflows=all_workflows(), data_converter=data_converter, workflow_runner=workflow_runner()).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
