"""AgentControlWorkflow: suspend or resume a software agent, decided by policy and signed.

    authenticate the request → the policy decides who may → write the worker's standing →
    record it → (suspend) nudge every in-flight release of the agent to stop

The registry's overlay is what makes a suspension real: from the moment it is written every
proof the agent signs (a new release, a runbook run, an approval) is refused by verification,
and the deploy actuator refuses to ship its releases. The nudge only makes in-flight releases
notice at once; each one re-reads the worker's standing before it stops, so a forged nudge
stops nothing. One workflow per request, whose id is derived from the proof's nonce, so a
replayed proof is the same request, not a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from signoff.models import AgentControl, AgentControlResult, AgentStandingChange, AgentSuspended, AuthRequest, AuthResult

from workflows.outbox import PATIENT, DecisionLog, Outbox


def control_id_for(nonce: str) -> str:
    """The workflow id of a suspend/resume request: one per signed request."""
    return f"agent-control-{nonce}"


def control_expectations(args: AgentControl) -> dict[str, Any]:
    """What the request's proof must have signed: this action on this agent, with this reason."""
    return {"action": f"{args.action}_agent", "subject": args.agent_id, "body": {"reason": args.reason}}


@workflow.defn(name="AgentControlWorkflow")
class AgentControlWorkflow:
    def __init__(self) -> None:
        self.audit = Outbox("audit")
        self.finished = False

    @workflow.run
    async def run(self, args: AgentControl) -> AgentControlResult:
        self.decisions = DecisionLog(
            self.audit,
            subject_name=f"agent:{args.agent_id}",
            subject_digest=lambda: "sha256:" + hashlib.sha256(args.agent_id.encode()).hexdigest(),
        )
        drain = asyncio.create_task(self.audit.run(lambda: self.finished))
        # A control's proof must be valid when Temporal accepted the request (workflow_start_time),
        # not when the first workflow task happened to run (start_time, later behind a backlog).
        info = workflow.info()
        self.accepted_at = info.workflow_start_time if workflow.patched("proof-valid-at-acceptance") else info.start_time
        try:
            return await self.decide(args)
        finally:
            await workflow.wait_condition(self.audit.drained)
            self.finished = True
            await drain

    async def decide(self, args: AgentControl) -> AgentControlResult:
        auth: AuthResult = await workflow.execute_local_activity(
            "authenticate_request",
            AuthRequest(proof=args.proof, expect=control_expectations(args), at=self.accepted_at),
            result_type=AuthResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
        who = auth.identity or args.identity
        why = self.proof_problem(args, auth)
        verdict: dict[str, Any] = {}
        if why is None:
            groups = sorted(auth.snapshot.groups_of(auth.identity)) if auth.snapshot else []
            verdict = await workflow.execute_activity(
                "decide_agent_control",
                {
                    "agent_id": args.agent_id,
                    "control_id": args.control_id,
                    "action": args.action,
                    "reason": args.reason,
                    "channel": auth.channel,
                    "principal": {"kind": auth.kind, "id": auth.identity, "groups": groups},
                },
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["PolicyError", "DirectoryError"]),
                result_type=dict,
            )
            why = "; ".join(verdict["denials"]) or None
        evidence = {"agent": args.agent_id, "action": args.action, "channel": args.channel, "policy_sha256": verdict.get("policy_sha256"),
                    "proof": args.proof.model_dump(mode="json") if args.proof else None}
        if why is not None:
            self.record(f"agent_{args.action}", "refused", [why], evidence, who)
            return AgentControlResult(control_id=args.control_id, agent_id=args.agent_id, action=args.action, accepted=False, reason=why, by=who)
        status = "suspended" if args.action == "suspend" else "active"
        previous: dict[str, Any] = await workflow.execute_activity(
            "set_agent_standing",
            AgentStandingChange(agent_id=args.agent_id, status=status, by=who, reason=args.reason, control_id=args.control_id),  # type: ignore[arg-type]
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PATIENT,
            result_type=dict,
        )
        said = f"agent {args.agent_id} {status} by {who}" + (f": {args.reason}" if args.reason else "")
        self.record(f"agent_{args.action}", status, [said], {**evidence, "previous": previous.get("status")}, who)
        stopping = await self.stop_in_flight(args) if args.action == "suspend" else []
        return AgentControlResult(
            control_id=args.control_id, agent_id=args.agent_id, action=args.action, accepted=True, reason=said, by=who, status=status, stopping=stopping
        )

    @staticmethod
    def proof_problem(args: AgentControl, auth: AuthResult) -> str | None:
        if not auth.ok:
            return auth.reason
        if auth.identity.lower() != args.identity.lower():
            return f"the proof speaks for {auth.identity}, not {args.identity}"
        if args.control_id != control_id_for(auth.nonce):
            return "this request's id does not match its proof; a proof is used once (replay refused)"
        return None

    async def stop_in_flight(self, args: AgentControl) -> list[str]:
        """Nudge every running release of the agent; each checks the worker's standing and stops."""
        ids: list[str] = await workflow.execute_activity(
            "running_releases_of_agent", args.agent_id, start_to_close_timeout=timedelta(seconds=60), retry_policy=PATIENT, result_type=list[str]
        )
        notice = AgentSuspended(agent_id=args.agent_id, control_id=args.control_id)
        await asyncio.gather(*(self.nudge(rid, notice) for rid in ids))
        self.record("agent_suspend", "releases_stopping", [f"{len(ids)} in-flight release(s) told to stop"], {"releases": ids}, None)
        return ids

    @staticmethod
    async def nudge(release_id: str, notice: AgentSuspended) -> None:
        try:
            await workflow.get_external_workflow_handle(release_id).signal("agent_suspended", notice)
        except Exception:  # noqa: BLE001 - a release that ended meanwhile needs no nudge
            workflow.logger.info("release %s ended before it was told to stop", release_id)

    def record(self, kind: str, outcome: str, reasons: list[str], evidence: dict[str, Any], who: str | None) -> None:
        actor = {"identity": who} if who else {"orchestrator": "signoff"}
        self.decisions.append(kind, outcome, reasons, evidence, actor)
