"""The bare-workflow baseline of bench_capacity: the same shape of work with nothing of signoff's.

`BareGateWorkflow` runs as many activities and local activities as a real gated release did
before its gate (measured from that release's history, `plan_from_history`), waits for two
approvals (Updates), then runs as many as the release ran after it. Every activity does nothing;
the workflow keeps only the two approvers. With `park` in its plan (`bench_capacity.py
--bare-park`) it continues-as-new when it reaches the gate, so it waits there in a run whose
history is a handful of events: what parking a release that way would save.

It runs on its own worker process with the same workflow runner (SIGNOFF_WORKFLOW_SANDBOX), cache
and activity slots as `signoff worker`, against a dev server of its own, so the drain rate it
reaches is what Temporal, the Python SDK and this machine allow for that many workflow tasks,
activities and Updates, and signoff's own cost is the gap to it.

The worker: `python -c "from bench.bare import main; main()" ADDRESS TASK_QUEUE` (bench_capacity
starts it; the workflow's module must be importable by name for the sandbox).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from signoff.search_attributes import PHASE

NAME = "BareGateWorkflow"


@activity.defn(name="bare_noop")
async def noop(_: int) -> int:
    return 0


@workflow.defn(name=NAME)
class BareGateWorkflow:
    def __init__(self) -> None:
        self.approvals: set[str] = set()

    async def _work(self, activities: int, local: int) -> None:
        for i in range(local):
            await workflow.execute_local_activity(noop, i, start_to_close_timeout=timedelta(seconds=30))
        for i in range(activities):
            await workflow.execute_activity(noop, i, start_to_close_timeout=timedelta(seconds=30))

    @workflow.run
    async def run(self, plan: dict[str, int]) -> list[str]:
        if not plan.get("parked"):
            await self._work(plan["before"], plan["before_local"])
            if plan.get("park"):  # --bare-park: wait at the gate in a new run with a short history
                workflow.continue_as_new({**plan, "parked": 1})
        workflow.upsert_search_attributes([PHASE.value_set("awaiting_approval")])
        await workflow.wait_condition(lambda: len(self.approvals) >= 2)
        await self._work(plan["after"], plan["after_local"])
        workflow.upsert_search_attributes([PHASE.value_set("succeeded")])
        return sorted(self.approvals)

    @workflow.update(name="approve")
    async def approve(self, who: str) -> bool:
        self.approvals.add(who)
        return True


def plan_from_history(events: list[Any]) -> dict[str, int]:
    """Activities and local activities a release ran before its first accepted Update and after."""
    from temporalio.api.enums.v1 import EventType

    plan = {"before": 0, "before_local": 0, "after": 0, "after_local": 0}
    side = "before"
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            side = "after"
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            plan[side] += 1
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            plan[side + "_local"] += 1
    return plan


async def serve(address: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from workers.gc_stats import install_from_env
    from workers.worker import activity_slots, cache_size, workflow_runner

    install_from_env()
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareGateWorkflow],
        activities=[noop],
        max_cached_workflows=cache_size(),
        max_concurrent_activities=activity_slots(),
        workflow_runner=workflow_runner(),
    )
    await worker.run()


def main() -> None:
    try:
        asyncio.run(serve(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        pass
