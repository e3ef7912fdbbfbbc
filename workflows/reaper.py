"""ReaperWorkflow: one run of the reaper (started by the `signoff-reaper` Schedule).

All the work is one activity (`reap_releases`, activities/reaper.py): find releases Temporal
ended from the outside without an outcome record, roll back a canary any of them left serving,
and record it in the signed log as that release's last decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy


@workflow.defn(name="ReaperWorkflow")
class ReaperWorkflow:
    @workflow.run
    async def run(self, lookback_hours: float) -> dict[str, Any]:
        reaped = await workflow.execute_activity(
            "reap_releases",
            lookback_hours,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
            result_type=list[dict[str, Any]],
        )
        return {"reaped": reaped}
