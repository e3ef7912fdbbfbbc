"""DriftWorkflow: one run of the periodic drift check (started by the `signoff-drift` Schedule).

    compare each service's target with the signed log → for a new drift: signed record, Slack
    notice, Jira incident (once per drift), optionally a certified runbook → for a drift a
    release or rollback reconciled: signed record and a Slack notice

"Once per drift" holds across runs because the check reads the drift records already in the log
(an open drift with the same digests is not reported again) and the incident is keyed by the
service and the digests (the Jira activity finds an existing ticket before creating one).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from signoff.drift import DRIFT_SUBJECT
    from signoff.models import ChatRef, DriftCheck, DriftReport, NotifyRequest, StartRunbook

from workflows.outbox import PATIENT, DecisionLog, Outbox


def drift_key(finding: dict[str, Any]) -> str:
    """One id per drift: the service and the two digests."""
    return f"drift-{finding['service']}-{str(finding['expected'])[7:19]}-{str(finding['serving'])[7:19]}"


@workflow.defn(name="DriftWorkflow")
class DriftWorkflow:
    def __init__(self) -> None:
        self.audit = Outbox("audit")
        self.finished = False

    @workflow.run
    async def run(self, args: DriftCheck) -> DriftReport:
        self.decisions = DecisionLog(self.audit, subject_name=DRIFT_SUBJECT, subject_digest=lambda: self.subject_digest)
        self.subject_digest = "sha256:" + "0" * 64
        drain = asyncio.create_task(self.audit.run(lambda: self.finished))
        findings: list[dict[str, Any]] = await workflow.execute_activity(
            "check_drift", "", start_to_close_timeout=timedelta(minutes=2), retry_policy=RetryPolicy(maximum_attempts=3), result_type=list[dict[str, Any]]
        )
        for finding in findings:
            if finding["status"] == "detected":
                await self.detected(finding, args)
            elif finding["status"] == "cleared":
                await self.cleared(finding)
        await workflow.wait_condition(self.audit.drained)
        self.finished = True
        await drain
        return DriftReport(findings=findings)

    def record(self, finding: dict[str, Any], outcome: str, reason: str) -> None:
        self.decisions.subject_name = f"{DRIFT_SUBJECT}{finding['service']}"
        self.subject_digest = finding.get("serving") or finding["expected"]
        evidence = {k: finding.get(k) for k in ("service", "expected", "serving", "release_id")}
        self.decisions.append("drift", outcome, [reason], evidence, {"orchestrator": "signoff", "check": "drift"})

    async def detected(self, finding: dict[str, Any], args: DriftCheck) -> None:
        service, key = finding["service"], drift_key(finding)
        reason = (
            f"{service} serves {str(finding['serving'])[:19]}… but its last release {finding['release_id']} left "
            f"{str(finding['expected'])[:19]}…: someone changed it outside signoff"
        )
        self.record(finding, "detected", reason)
        await self.tell(key, "drift", reason)
        await workflow.execute_activity(
            "jira_open_incident",
            NotifyRequest(release_id=key, kind="incident", text=reason),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=PATIENT,
            result_type=ChatRef,
        )
        if args.runbook:
            await workflow.start_child_workflow(
                "RunbookWorkflow",
                StartRunbook(run_id=f"{key}-remediation", runbook=args.runbook, params={"service": service}, requested_by="signoff@automation", channel="api", search_attributes=args.search_attributes),
                id=f"{key}-remediation",
                parent_close_policy=ParentClosePolicy.ABANDON,
            )

    async def cleared(self, finding: dict[str, Any]) -> None:
        reason = f"{finding['service']} serves {str(finding['serving'])[:19]}… again, as its last release {finding['release_id']} left it"
        self.record(finding, "cleared", reason)
        await self.tell(drift_key(finding), "drift_cleared", reason)

    async def tell(self, key: str, kind: str, text: str) -> None:
        """A Slack notice; one that never arrives is recorded, and the check goes on."""
        try:
            await workflow.execute_activity(
                "slack_notify",
                NotifyRequest(release_id=key, kind=kind, text=text),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=8, maximum_interval=timedelta(seconds=30)),
                result_type=ChatRef,
            )
        except ActivityError as e:
            message = getattr(e.cause, "message", None) or str(e.cause or e)
            self.decisions.append("notification", "failed", [f"slack: {message}"], {"channel": "slack", "about": key}, {"orchestrator": "signoff", "check": "drift"})
