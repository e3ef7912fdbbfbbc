"""An ordered queue of activities drained by one background coroutine inside a workflow."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from signoff.models import DecisionInput

PATIENT = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30))
#: Patch: records queued together are appended by one `append_decisions` activity.
DECISION_BATCHES = "decision-batches"
#: At most this many records per activity, so its input stays far below payload limits.
MAX_BATCH = 20


class Outbox:
    """An ordered queue of activities drained by one background coroutine.

    Order matters: a Slack `chat.update` must follow the `chat.postMessage` that made the
    message, and decision records are appended in decision order.
    """

    def __init__(self, name: str, *, on_failure: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.items: list[Callable[[], Awaitable[None]]] = []
        self.busy = False
        self.on_failure = on_failure

    def put(self, item: Callable[[], Awaitable[None]]) -> None:
        self.items.append(item)

    def drained(self) -> bool:
        return not self.items and not self.busy

    async def run(self, stopping: Callable[[], bool]) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self.items) or stopping())
            if not self.items and stopping():
                return
            self.busy = True
            item = self.items.pop(0)
            try:
                await item()
            except (ActivityError, ApplicationError) as e:  # never blocks the release
                cause = getattr(e, "cause", None)
                message = getattr(cause, "message", None) or str(cause or e)
                workflow.logger.warning("%s outbox item failed: %s", self.name, message)
                if self.on_failure is not None:
                    self.on_failure(self.name, message)
            finally:
                self.busy = False


class Patches:
    """Which patches a run has, recording one marker instead of one per patch.

    Each `workflow.patched(id)` a new run asks records a marker *and* an upsert of the
    TemporalChangeVersion search attribute (the SDK does it): a dozen patches made a release's
    history two dozen events longer and cost a dozen visibility writes. A run started on this code
    records only `baseline`, which implies every patch in `implied`; a run from before has no such
    marker and asks each patch as it always did, so its history replays. Patches added later are
    asked for themselves or folded into a new baseline; a run that recorded an `older` baseline
    has the patches that baseline implied, and asks any later one for itself.
    """

    def __init__(self, baseline: str, implied: frozenset[str], older: tuple[tuple[str, frozenset[str]], ...] = ()) -> None:
        # A run started on this code records `baseline` alone. Replaying a run from before, the
        # newer baselines are absent (patched() answers False and records nothing) and the
        # baseline it did record is found.
        self.current = False
        self.implied: frozenset[str] = frozenset()
        for name, patches in ((baseline, implied), *older):
            if workflow.patched(name):
                self.current, self.implied = True, patches
                break

    def has(self, patch_id: str) -> bool:
        return (self.current and patch_id in self.implied) or workflow.patched(patch_id)


class DecisionLog:
    """Numbers decisions and queues them as signed records.

    Records queued while an earlier append is in flight go out together in one
    `append_decisions` activity: one activity (three events and one workflow task) instead of
    one per record, which keeps histories short and replays cheap. Runs started before that
    change (no `decision-batches` marker in their first task) keep one `append_decision` per
    record, so their histories replay. The (workflow id, sequence) pair of each record keeps the
    append idempotent when an activity retries, batched or not.
    """

    def __init__(self, outbox: Outbox, *, subject_name: str, subject_digest: Callable[[], str], patched: Callable[[str], bool] = workflow.patched) -> None:
        self.outbox = outbox
        self.subject_name = subject_name
        self.subject_digest = subject_digest
        self.sequence = 0
        self.pending: list[DecisionInput] = []
        # Decided once, in the first activation (before any local activity can run), for the
        # whole run; constructed from the workflow's __init__.
        self.batches = patched(DECISION_BATCHES)

    def append(self, kind: str, outcome: str, reasons: list[str], evidence: dict[str, Any], actor: dict[str, Any]) -> None:
        self.sequence += 1
        info = workflow.info()
        self.pending.append(
            DecisionInput(
                kind=kind,
                outcome=outcome,
                subject_name=self.subject_name,
                subject_digest=self.subject_digest(),
                reasons=[r for r in reasons if r],
                actor=actor,
                evidence=evidence,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                at=workflow.now(),
                sequence=self.sequence,
            )
        )
        self.outbox.put(self.flush)

    async def flush(self) -> None:
        """Append the oldest queued records: up to MAX_BATCH at once when batching, else the
        oldest alone. Queued once per record; a flush that finds nothing left (an earlier batch
        took its record) schedules nothing."""
        if not self.pending:
            return
        options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": PATIENT}
        if self.batches and len(self.pending) > 1:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            await workflow.execute_activity("append_decisions", batch, result_type=list, **options)
            return
        await workflow.execute_activity("append_decision", self.pending.pop(0), result_type=dict, **options)
