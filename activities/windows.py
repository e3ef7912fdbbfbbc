"""Deploy windows and freezes, read for a workflow: `load_windows` (a local activity a release
runs before promotion) and `evaluate_freeze_policy` (who may start or end a freeze).

The windows are the worker's (SIGNOFF_WINDOWS); the freezes are kept by the FreezeWorkflow
(workflows/freeze.py), one per task queue. A release that must wait asks the keeper to signal it when freezes
change (signal-with-start, so the first release or freeze creates the keeper).
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from signoff.config import Settings
from signoff.errors import ConfigError, PolicyError
from signoff.models import Freeze
from signoff.policy import evaluate_rule
from signoff.windows import WindowConfig, freezes_id, WindowRequest, read_windows_file

FREEZE_RULE = "data.signoff.freeze.decision"


class WindowActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="load_windows")
    async def load_windows(self, request: WindowRequest) -> WindowConfig:
        """The windows that apply to the release's service and the freezes in force now."""
        try:
            windows = [w for w in read_windows_file(self.settings.windows_path).windows if w.applies(request.service, request.environment)]
        except ConfigError as e:
            raise ApplicationError(str(e), type="ConfigError", non_retryable=True) from e
        return WindowConfig(windows=windows, freezes=await self._freezes(request))

    async def _freezes(self, request: WindowRequest) -> list[Freeze]:
        """The freezes in force. Read from the keeper's memo with a describe (the server answers
        it alone, however busy the worker is: a query waited seconds behind 10,000 releases and
        held their workflow tasks open); a keeper without the memo (started before it, or just
        created) is queried. `watch` registers the release to be signalled when freezes change."""
        client = activity.client()
        if request.watch:
            from workflows.freeze import FreezeWorkflow

            handle: WorkflowHandle[Any, Any] = await client.start_workflow(
                FreezeWorkflow.run,
                None,
                id=freezes_id(activity.info().task_queue),
                task_queue=activity.info().task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                start_signal="watch",
                start_signal_args=[request.release_id],
            )
        else:
            handle = client.get_workflow_handle(freezes_id(activity.info().task_queue))
        try:
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                return []  # the keeper ended because nothing was frozen; the next freeze starts a new one
            raw = await described.memo_value("freezes", None)
            if raw is None:
                raw = await handle.query("freezes")
        except RPCError:
            return []  # no keeper yet: nobody ever started a freeze
        return [Freeze.model_validate(f) for f in raw]  # the release keeps those in force now (freezes_for)

    @activity.defn(name="evaluate_freeze_policy")
    async def evaluate_freeze_policy(self, document: dict[str, Any]) -> dict[str, Any]:
        """data.signoff.freeze.decision → {"allow": bool, "reason": str}; a broken policy is permanent."""
        try:
            raw = evaluate_rule(FREEZE_RULE, document, policy_dir=self.settings.policy_dir)
        except PolicyError as e:
            raise ApplicationError(str(e), type="PolicyError", non_retryable=True) from e
        if not isinstance(raw, dict) or not isinstance(raw.get("allow"), bool):
            raise ApplicationError(f"the policy gave no freeze decision ({FREEZE_RULE} is undefined); define it (policies/freeze.rego).", type="PolicyError", non_retryable=True)
        return {"allow": raw["allow"], "reason": str(raw.get("reason", ""))}


def activities_from_settings(settings: Settings) -> list[Any]:
    acts = WindowActivities(settings)
    return [acts.load_windows, acts.evaluate_freeze_policy]
