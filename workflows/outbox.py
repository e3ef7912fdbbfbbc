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


class DecisionLog:
    """Numbers decisions and queues each as a signed record (activity `append_decision`).

    The (workflow id, sequence) pair makes the append idempotent when the activity retries.
    """

    def __init__(self, outbox: Outbox, *, subject_name: str, subject_digest: Callable[[], str]) -> None:
        self.outbox = outbox
        self.subject_name = subject_name
        self.subject_digest = subject_digest
        self.sequence = 0

    def append(self, kind: str, outcome: str, reasons: list[str], evidence: dict[str, Any], actor: dict[str, Any]) -> None:
        self.sequence += 1
        info = workflow.info()
        decision = DecisionInput(
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

        async def append() -> None:
            await workflow.execute_activity(
                "append_decision", decision, start_to_close_timeout=timedelta(seconds=30), retry_policy=PATIENT, result_type=dict
            )

        self.outbox.put(append)
