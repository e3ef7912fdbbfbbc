"""The strict sandbox is what CI replays every saved history under (tests/test_replay.py): it has
to fail on a forbidden call in workflow code. Shown on a real dev server: the same workflow that
reads the wall clock runs to completion on the worker's default runner (`shared`) and fails its
workflow task under `strict`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from workers.worker import workflow_runner


@workflow.defn(name="ReadsTheWallClock")
class ReadsTheWallClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # forbidden in workflow code: not replay-safe


async def _run_on(dev_env, mode: str) -> tuple[str | None, list[str]]:
    task_queue = f"sandbox-{mode}-{uuid.uuid4().hex[:6]}"
    async with Worker(dev_env.client, task_queue=task_queue, workflows=[ReadsTheWallClock], workflow_runner=workflow_runner(mode)):
        handle = await dev_env.client.start_workflow(ReadsTheWallClock.run, id=f"clock-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        try:
            return await asyncio.wait_for(handle.result(), timeout=5), []
        except asyncio.TimeoutError:
            failures = [
                e.workflow_task_failed_event_attributes.failure.message
                async for e in handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            ]
            await handle.terminate("test over")
            return None, failures


@pytest.mark.parametrize("mode", ["shared", "strict"])
async def test_strict_sandbox_fails_a_forbidden_call_that_shared_runs(dev_env, mode: str) -> None:
    result, failures = await _run_on(dev_env, mode)
    if mode == "shared":
        assert result is not None and failures == []
    else:
        assert result is None
        assert failures and "datetime.datetime.now" in failures[0], failures
