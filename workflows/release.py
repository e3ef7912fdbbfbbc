"""ReleaseWorkflow: the release plan, readable top to bottom.

    build → test → verify provenance → decide (policy) → ask (gates) → promote → watch (canary)
                                                                         ↘ roll back

Deterministic orchestration only: every side effect is an activity called by name (see
`activities/__init__.py`). Approvals arrive as the `submit_approval` Update; `promote` and
`abort` are Updates too so the caller learns at once whether it was accepted. Decision records
and chat notifications go through ordered outboxes drained by background coroutines, so a slow
Slack or audit store never delays an approver's answer, and the workflow only returns once
every record is written.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from signoff.gates import eligible_groups
    from signoff.models import (
        append_bounded,
        AgentSuspended,
        ApprovalAttempt,
        ApprovalEvidence,
        ApprovalResult,
        AuthRequest,
        AuthResult,
        Evidence,
        RefusalRecord,
        BuildRequest,
        BuildResult,
        CanaryStatus,
        ChangeFacts,
        ChangeRequest,
        ChatRef,
        DeployRequest,
        DeploymentState,
        GateNotice,
        Freeze,
        GateStatus,
        HoldStatus,
        Measurement,
        NotifyRequest,
        Phase,
        PolicyDecision,
        PolicyRequest,
        ProvenanceRequest,
        ProvenanceResult,
        ReleaseStatus,
        RollbackRequest,
        SbomRequest,
        SbomResult,
        ScanRequest,
        ScanResult,
        StartRelease,
        StartRunbook,
        TargetRequest,
        TestRequest,
        TestSummary,
        PlanSummary,
        WindowOverride,
        WindowState,
    )
    from signoff.plan import plan_sha256 as planned_sha256
    from signoff.plan_view import canary_steps
    from signoff.policy_input import build_policy_input
    from signoff.windows import WindowConfig, WindowRequest, freezes_for, window_state
    from signoff.trust.evidence import forbidden_approvers, judge_start, plan_sha256, start_expectations
    from signoff.search_attributes import AWAITING, PHASE

from workflows.canary import CanaryRunner
from workflows.outbox import DECISION_BATCHES, PATIENT, DecisionLog, Outbox, Patches
from workflows.gate import ApprovalGate, merge_gates

#: Patch: whether a gate's progress edits the Slack message is decided when the edit's turn comes
#: in the Slack queue (after the "opened" post has finished), not when the gate changes. Decided
#: at the change, it read whether the post had finished; a release rebuilt from history on the
#: approval's own task could apply the post's completion after the approval (Temporal's core hands
#: them over in one activation, updates first), queue an edit, and then fail every later
#: replay, which applies them in two (a nondeterminism error; tests/test_cold_replay.py).
SLACK_EDIT_IN_TURN = "slack-edit-decided-in-turn"
#: A release started on this code records this one patch marker; it implies every patch below
#: (releases from before ask each of them, and replay as they ran). See `Patches`.
RELEASE_BASELINE = "release-2026-12b"
#: The baseline before SLACK_EDIT_IN_TURN: runs that recorded it have the patches it implied.
RELEASE_BASELINE_BEFORE = "release-2026-12"
RELEASE_PATCHES_BEFORE = frozenset(
    {
        DECISION_BATCHES,
        "evidence-attestations",
        "agent-budgets",
        "runner-forensics",
        "windows-plan-verdicts",
        "analysis-child-workflows",
        "lean-release-history",
        "authenticated-start",
        "authenticated-attempts",
        "reuse-directory-snapshot",
        "authenticated-controls",
        "slack-progress-needs-message",
    }
)
RELEASE_PATCHES = RELEASE_PATCHES_BEFORE | {SLACK_EDIT_IN_TURN}

TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
VULNS = "https://in-toto.io/attestation/vulns/v0.1"
CYCLONEDX = "https://cyclonedx.org/bom"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
VSA = "https://slsa.dev/verification_summary/v1"
#: Temporal refuses a search attribute value over 2 KiB (and fails the workflow task): the
#: awaiting list is cut below that; `release status` always shows everyone.
AWAITING_BYTES = 1800


def bounded_keywords(values: list[str], limit: int = AWAITING_BYTES) -> list[str]:
    """The first values (sorted) whose JSON encoding stays under ``limit`` bytes."""
    kept: list[str] = []
    size = 2
    for value in values:
        size += len(value.encode()) + 4  # quotes and a separator
        if size > limit:
            break
        kept.append(value)
    return kept


#: Refused aborts by signal that are recorded; more are dropped (they could fill the history).
MAX_SIGNAL_REFUSALS = 20


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ONCE_MORE = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["BadCommand", "BuildFailed", "Timeout", "VerificationFailed"])


class Stop(Exception):
    """Ends the plan early in a final phase (failed, denied, rejected, aborted, rolled back)."""

    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


@workflow.defn(name="ReleaseWorkflow")
class ReleaseWorkflow:
    @workflow.init
    def __init__(self, args: StartRelease) -> None:
        spec = args.spec
        self.args = args
        self.spec = spec
        self.status = ReleaseStatus(
            release_id=args.release_id,
            service=spec.service,
            environment=spec.environment,
            artifact_digest=spec.artifact,
            requested_by=spec.requested_by,
            agent=spec.agent,
            change_summary=spec.change.summary,
            phase=Phase.building,
        )
        self.gates: list[ApprovalGate] = []
        self.gates_ready = False
        self.signal_refusals = 0
        self.abort_request: dict[str, Any] | None = None
        self.promote_requested = False
        self.finished = False
        self.audit = Outbox("audit")
        # Asked first, in the first activation (before any local activity can run).
        self.patches = Patches(RELEASE_BASELINE, RELEASE_PATCHES, older=((RELEASE_BASELINE_BEFORE, RELEASE_PATCHES_BEFORE),))
        self.decisions = DecisionLog(
            self.audit,
            subject_name=f"{spec.service}@{args.release_id}",
            subject_digest=lambda: self.status.artifact_digest or "sha256:" + hashlib.sha256(args.release_id.encode()).hexdigest(),
            patched=self.patches.has,
        )
        self.slack = Outbox("slack", on_failure=self.notice_failed)
        self.jira = Outbox("jira", on_failure=self.notice_failed)
        self.slack_opened: set[str] = set()
        self.artifact_path: str | None = None
        self.provenance_path: str | None = None
        self.used_nonces: set[str] = set()
        self.starter: AuthResult | None = None
        self.attestations: list[dict[str, Any]] = []
        self.attesting = False
        self.weighing_budgets = False
        self.keeping_forensics = False
        self.killed_for_limit = False
        self.windowed = False
        self.freezes_changed = False
        self.measure_thread: tuple[str | None, str | None] = (None, None)
        self.freezes_now: list[Freeze] = []
        self.canary_frozen = False
        self.canary_done = False
        self.analysis_children = False
        self.lean = False
        self.attributes_set: dict[str, Any] = {}

    # ================================================================== the plan

    @workflow.run
    async def run(self, args: StartRelease) -> ReleaseStatus:
        info = workflow.info()
        self.status.workflow_id, self.status.run_id = info.workflow_id, info.run_id
        self.status.started_at = workflow.now()
        drains = [asyncio.create_task(box.run(lambda: self.finished)) for box in (self.audit, self.slack, self.jira)]
        # Histories from before evidence attestations replay without them.
        self.attesting = self.patches.has("evidence-attestations")
        # Before the start's local activity (patches after one in the same task do not replay).
        self.weighing_budgets = self.patches.has("agent-budgets")
        self.keeping_forensics = self.patches.has("runner-forensics")
        # Deploy windows, freezes, the plan hash and explained measurements: one patch, asked here,
        # before any local activity (a patch first asked after one does not replay).
        self.windowed = self.patches.has("windows-plan-verdicts")
        # Long canary analyses run as AnalysisWorkflow children that continue-as-new; histories
        # from before measure them here. Asked here for the same reason as the patches above.
        self.analysis_children = self.patches.has("analysis-child-workflows")
        # A leaner history (issue 18): a release asks the freeze keeper to wake it only when it
        # must wait (every release registering made the keeper a hot spot and its watch list grow
        # without end), and a search attribute is upserted only when its value changes (each
        # upsert is an event and a visibility write).
        self.lean = self.patches.has("lean-release-history")
        self.attributes_set = {pair.key.name: pair.value for pair in info.typed_search_attributes} if self.lean else {}
        try:
            if self.patches.has("authenticated-start"):
                await self.authenticate()
            await self.build()
            await self.test()
            await self.scan()
            await self.inventory()
            await self.verify()
            await self.decide()
            await self.ask()
            await self.hold_for_window()
            await self.promote()
            await self.watch()
            self.end(Phase.succeeded, f"{self.status.artifact_digest} is stable")
        except Stop as stop:
            self.end(stop.phase, stop.reason)
            await self.keep_forensics(stop)
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() and all(b.drained() for b in (self.audit, self.slack, self.jira))
        )
        self.finished = True
        await asyncio.gather(*drains)
        return self.status

    async def authenticate(self) -> None:
        """Who asks? The start's proof, checked against the worker's registry. The requester is
        the person who signed, or the registry's owner of the agent that signed; a release file
        that says otherwise is refused before anything runs."""
        auth = await self.authenticate_proof(
            self.args.proof, start_expectations(self.args.release_id, self.spec, self.args.base_dir), at=self.accepted_at()
        )
        why = auth.reason if not auth.ok else judge_start(auth.kind, auth.id, auth.agent, self.spec)[1]
        if why:
            self.status.refusals.append(RefusalRecord(by=auth.principal or self.spec.requested_by, channel=auth.channel or "api", at=workflow.now(), decision="start", reason=why))
            self.record("start", "refused", [why], {"principal": auth.principal or None}, actor=auth.principal or "unauthenticated")
            raise Stop(Phase.denied, f"the start was refused: {why}")
        self.starter = auth
        self.status.started_by = {"principal": auth.principal, "method": auth.method, "channel": auth.channel, "requester": self.spec.requested_by}
        self.record(
            "start",
            "authenticated",
            [f"started by {auth.principal} for {self.spec.requested_by}"],
            {"principal": auth.principal, "method": auth.method, "proof": self.args.proof.model_dump(mode="json") if self.args.proof else None},
            actor=auth.principal,
        )

    def accepted_at(self) -> Any:
        """When Temporal accepted the start: the time a start's proof must be valid at. Runs from
        before the release-2026-12 baseline used `start_time`, which is when the *first workflow
        task* started: behind a backlog of thousands of starts that came minutes later, and a proof
        valid when the release was requested was refused as expired."""
        info = workflow.info()
        return info.workflow_start_time if self.patches.current else info.start_time

    async def authenticate_proof(self, proof: Any, expect: dict[str, Any], *, at: Any = None) -> AuthResult:
        return await workflow.execute_local_activity(
            "authenticate_request",
            AuthRequest(proof=proof, expect=expect, at=at),
            result_type=AuthResult,
            start_to_close_timeout=timedelta(seconds=30),
        )

    async def build(self) -> None:
        """Build the artifact, or take the digest the release file names."""
        self.set_phase(Phase.building)
        if self.spec.build is None:
            return
        result: BuildResult = await self.act(
            "run_build",
            BuildRequest(
                release_id=self.args.release_id,
                command=self.spec.build.command,
                output=self.spec.build.output,
                workdir=self.workdir(),
                timeout_seconds=self.spec.build.timeout_seconds,
                checkout=self.args.base_dir,
                facts=self.sandbox_facts("build", self.spec.build.network),
            ),
            BuildResult,
            timeout=timedelta(seconds=self.spec.build.timeout_seconds + 30),
            heartbeat=timedelta(seconds=10),
            failure_phase=Phase.failed,
            what="the build",
        )
        self.status.artifact_digest = result.digest
        self.artifact_path = result.artifact_path
        self.provenance_path = result.provenance_path
        if result.profile:
            self.status.sandbox["build"] = result.profile
        if result.provenance_envelope:
            self.attest(SLSA_PROVENANCE, {"envelope_sha256": _sha256(str(result.provenance_envelope.get("payload", ""))), "sandbox": result.profile})
        self.record(
            "build",
            "succeeded",
            [f"built {result.digest} in the {result.profile or 'unrecorded'} sandbox"],
            {"artifact": result.digest, "sandbox": result.profile, "provenance": result.provenance_envelope, "duration_seconds": result.duration_seconds},
        )

    async def test(self) -> None:
        """Run the tests; any failure ends the release with the failing test names."""
        if self.spec.test is None:
            return
        self.set_phase(Phase.testing)
        summary: TestSummary = await self.act(
            "run_tests",
            TestRequest(
                release_id=self.args.release_id,
                command=self.spec.test.command,
                workdir=self.workdir(),
                junit=self.spec.test.junit,
                coverage=self.spec.test.coverage,
                coverage_report=self.spec.test.coverage_report,
                rerun_failures=self.spec.test.rerun_failures,
                timeout_seconds=self.spec.test.timeout_seconds,
                checkout=self.args.base_dir,
                facts=self.sandbox_facts("test", self.spec.test.network),
            ),
            TestSummary,
            timeout=timedelta(seconds=self.spec.test.timeout_seconds + 30),
            heartbeat=timedelta(seconds=10),
            failure_phase=Phase.failed,
            what="the tests",
        )
        self.status.tests = summary
        if summary.profile:
            self.status.sandbox["test"] = summary.profile
        outcome = "failed" if summary.failed or summary.errors else "passed"
        self.record("tests", outcome, summary.failures[:20], summary.model_dump(mode="json"))
        self.attest(
            TEST_RESULT,
            {
                "result": "FAILED" if outcome == "failed" else "PASSED",
                "configuration": [{"name": "test.command", "uri": "signoff:release-file#test", "digest": {"sha256": _sha256(self.spec.test.command)}}],
                "passedTests": [],
                "failedTests": summary.failures[:200],
                "warnedTests": summary.flaky,
                "counts": {"passed": summary.passed, "failed": summary.failed, "errors": summary.errors, "skipped": summary.skipped},
                "coverage": summary.coverage,
                "sandbox": summary.profile,
            },
        )
        if outcome == "failed":
            names = ", ".join(summary.failures[:5]) or "see the test report"
            raise Stop(Phase.failed, f"{summary.failed + summary.errors} test(s) failed: {names}")

    async def scan(self) -> None:
        """Run the release's scanners (SARIF) in its workspace; the policy decides on findings."""
        for spec in self.spec.scans:
            result: ScanResult = await self.act(
                "run_scan",
                ScanRequest(
                    release_id=self.args.release_id,
                    command=spec.command,
                    workdir=self.workdir(),
                    timeout_seconds=spec.timeout_seconds,
                    checkout=self.args.base_dir,
                    facts=self.sandbox_facts("scan", False),
                    name=spec.name,
                    sarif=spec.sarif,
                ),
                ScanResult,
                timeout=timedelta(seconds=spec.timeout_seconds + 30),
                heartbeat=timedelta(seconds=10),
                failure_phase=Phase.failed,
                what=f"the {spec.name} scan",
            )
            self.status.scans.append(result)
            self.attest(
                VULNS,
                {
                    "scanner": {"uri": f"signoff:scan/{spec.name}", "result": [{"id": f.rule, "severity": [{"method": "sarif", "score": f.level}]} for f in result.findings[:200]]},
                    "metadata": {"sarif_sha256": result.sarif_sha256, "errors": result.errors, "warnings": result.warnings, "notes": result.notes},
                },
            )
            self.record(
                "scan",
                "findings" if result.findings else "clean",
                [f"{spec.name}: {result.errors} error(s), {result.warnings} warning(s), {result.notes} note(s)"],
                {"scan": spec.name, "sarif_sha256": result.sarif_sha256, "rules": sorted({f.rule for f in result.findings}), "sandbox": result.profile},
            )

    async def inventory(self) -> None:
        """Read the artifact's CycloneDX SBOM: its components and licences are policy inputs."""
        if self.spec.sbom is None:
            return
        sbom: SbomResult = await self.act(
            "read_sbom",
            SbomRequest(
                release_id=self.args.release_id,
                command=self.spec.sbom.command or "",
                workdir=self.workdir(),
                timeout_seconds=self.spec.sbom.timeout_seconds,
                checkout=self.args.base_dir,
                facts=self.sandbox_facts("sbom", False),
                path=self.spec.sbom.path,
            ),
            SbomResult,
            timeout=timedelta(seconds=self.spec.sbom.timeout_seconds + 30),
            heartbeat=timedelta(seconds=10) if self.spec.sbom.command else None,
            failure_phase=Phase.failed,
            what="reading the SBOM",
        )
        self.status.sbom = sbom
        self.attest(CYCLONEDX, {"sha256": sbom.sha256, "components": len(sbom.components), "licenses": sorted({lic for c in sbom.components for lic in c.licenses})})
        self.record("sbom", "read", [f"{len(sbom.components)} component(s)"], {"sbom_sha256": sbom.sha256, "components": len(sbom.components)})

    async def verify(self) -> None:
        """Check the artifact's Sigstore bundle against the pinned identity and issuer."""
        if self.spec.provenance is None:
            return
        self.set_phase(Phase.verifying)
        result: ProvenanceResult = await self.act(
            "verify_provenance",
            ProvenanceRequest(
                release_id=self.args.release_id,
                spec=self.spec.provenance,
                base_dir=self.args.base_dir,
                artifact_path=self.artifact_path,
                digest=self.digest(),
            ),
            ProvenanceResult,
            timeout=timedelta(minutes=5),
            failure_phase=Phase.denied,
            what="provenance verification",
            retry=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["VerificationFailed"]),
        )
        self.status.provenance = result
        self.record(
            "provenance",
            "verified" if result.verified else "failed",
            [result.reason] if result.reason else [],
            result.model_dump(mode="json"),
        )
        if not result.verified:
            raise Stop(Phase.denied, f"provenance did not verify: {result.reason}")

    async def derive(self) -> None:
        """What the commit really changes, from Git: the paths, the authors, the signatures."""
        change = self.spec.change
        if not change.repository or not change.commit:
            return
        facts: ChangeFacts = await self.act(
            "derive_change",
            ChangeRequest(repository=change.repository, commit=change.commit, base=change.base, base_dir=self.args.base_dir),
            ChangeFacts,
            timeout=timedelta(seconds=90),
            failure_phase=Phase.failed,
            what="reading the change from Git",
        )
        self.status.change = facts
        self.record(
            "change",
            "derived",
            [f"{len(facts.paths)} path(s) by {', '.join(facts.authors) or 'nobody'} in {facts.base[:12]}..{facts.commit[:12]}"],
            {"commit": facts.commit, "base": facts.base, "paths": [p.path for p in facts.paths[:200]], "authors": facts.authors, "signed": facts.signed},
        )

    async def decide(self) -> None:
        """Ask the policy for the risk tier, the gates and any denials."""
        self.set_phase(Phase.deciding)
        if self.windowed:
            self.status.plan_sha256 = plan_sha256(self.spec, self.status.artifact_digest)
        # No patch needed: only releases naming change.repository (a field older histories never
        # had) read Git, so histories from before replay unchanged.
        await self.derive()
        usage = await self.agent_usage()
        policy_input = build_policy_input(
            self.spec,
            digest=self.status.artifact_digest,
            tests=self.status.tests,
            provenance=self.status.provenance,
            now=workflow.now(),
            sandbox=self.status.sandbox,
            change=self.status.change,
            scans=self.status.scans,
            sbom=self.status.sbom,
            usage=usage,
            window=await self.window_now(watch=False),
        )
        decision: PolicyDecision = await self.act(
            "evaluate_policy",
            PolicyRequest(input=policy_input, policy_dir=self.args.policy_dir),
            PolicyDecision,
            timeout=timedelta(seconds=60),
            failure_phase=Phase.failed,
            what="the policy",
        )
        gates = merge_gates(self.spec.gates, decision.gates)
        decision = decision.model_copy(update={"gates": gates})
        self.status.planned_sha256 = planned_sha256(self.spec, decision)
        self.status.policy = decision
        self.status.tier = decision.tier
        self.record(
            "policy",
            "denied" if decision.denials else "allowed",
            decision.denials or decision.reasons,
            {
                "policy_sha256": decision.policy_sha256,
                "tier": decision.tier,
                "gates": [g.model_dump(mode="json") for g in gates],
                "planned_sha256": self.status.planned_sha256,
                **({"input": policy_input, "attestations": list(self.attestations)} if self.attesting else {}),
            },
        )
        if decision.denials:
            raise Stop(Phase.denied, "; ".join(decision.denials))
        forbidden = forbidden_approvers(self.spec.requested_by, self.spec, self.status.change.authors if self.status.change else None)
        for spec in gates:
            gate = ApprovalGate.create(
                spec,
                forbidden=forbidden,
                directory_path=self.args.directory_path or "",
                current_digest=lambda: self.status.artifact_digest,
                current_plan=lambda: self.status.plan_sha256,
                notify=self.gate_notice,
                record=self.record,
                cancelled=lambda: self.abort_request is not None,
                used_nonces=self.used_nonces,
                patched=self.patches.has,
            )
            self.gates.append(gate)
        self.status.gates = [g.status for g in self.gates]
        if self.windowed:
            await self.summarise_plan()

    async def summarise_plan(self) -> None:
        """What approvers are shown will run: the commands, the deploy target with its settings,
        the canary plan and the digest a rollback would restore (read from the target now)."""
        spec = self.spec
        current: DeploymentState = await self.act(
            "current_deployment",
            TargetRequest(service=spec.service, target=spec.deploy),
            DeploymentState,
            timeout=timedelta(seconds=60),
            failure_phase=Phase.failed,
            what="reading the current deployment",
        )
        self.status.plan = PlanSummary(
            build_command=spec.build.command if spec.build else None,
            test_command=spec.test.command if spec.test else None,
            scanners=[s.name for s in spec.scans],
            deploy_target=spec.deploy.target,
            deploy_settings=dict(spec.deploy.settings),
            canary=canary_steps(spec.canary.steps) if spec.canary else [],
            on_failure=spec.canary.on_failure if spec.canary else "rollback",
            rollback_target=current.stable if current.stable != self.digest() else current.detail.get("previous"),
        )

    async def agent_usage(self) -> dict[str, Any] | None:
        """What the asking agent has used today (releases, build minutes, canaries now) and its
        budgets: the policy weighs them. Histories from before budgets replay without it."""
        if self.spec.agent is None or not self.weighing_budgets:
            return None
        midnight = workflow.now().replace(hour=0, minute=0, second=0, microsecond=0)
        return await self.act(
            "agent_usage",
            {"agent_id": self.spec.agent.id, "release_id": self.args.release_id, "since": midnight.isoformat()},
            dict,
            timeout=timedelta(seconds=60),
            failure_phase=Phase.failed,
            what="counting the agent's usage",
        )

    async def keep_forensics(self, stop: Stop) -> None:
        """A release of a suspended agent, or one whose command was killed for its time limit:
        the runner's signed snapshots of the workspace go into the signed log."""
        suspended = (self.abort_request or {}).get("channel") == "suspension"
        if not self.keeping_forensics or not (suspended or self.killed_for_limit):
            return
        try:
            kept: list[dict[str, Any]] = await workflow.execute_activity(
                "keep_forensics",
                {"release_id": self.args.release_id, "phase": self.stopped_in(), "why": stop.reason},
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=3),
                result_type=list[dict[str, Any]],
            )
        except ActivityError as e:  # the release has ended either way; say the snapshot is missing
            self.record("forensics", "missing", [getattr(e.cause, "message", None) or str(e.cause or e)], {})
            return
        for item in kept:
            self.record("forensics", "kept", [f"{item['what']}: {item['ended']}; {item['files']} file(s) in the workspace"], item)

    def stopped_in(self) -> str:
        """The phase the release was in before its end."""
        phases = [h["phase"] for h in self.status.history if "phase" in h]
        return phases[-2] if len(phases) > 1 else "release"

    async def ask(self) -> None:
        """Open every gate at once and wait until all are approved (or one is not)."""
        if not self.gates:
            return
        self.set_phase(Phase.awaiting_approval)
        for gate in self.gates:
            await gate.open()
        self.gates_ready = True
        self.update_awaiting()
        outcomes = await asyncio.gather(*(gate.wait() for gate in self.gates))
        self.gates_ready = False
        self.update_awaiting()
        self.check_abort()
        for gate, outcome in zip(self.gates, outcomes):
            self.record("gate_outcome", outcome, [gate.status.progress], {"gate": gate.spec.name})
            if outcome != "approved":
                why = "an approver rejected it" if outcome == "rejected" else f"it {outcome} before quorum"
                raise Stop(Phase.rejected, f"gate {gate.spec.name} closed: {why}")

    async def promote(self) -> None:
        """Remember what is serving now (the rollback target), then start shipping the digest."""
        self.set_phase(Phase.promoting)
        current: DeploymentState = await self.act(
            "current_deployment",
            TargetRequest(service=self.spec.service, target=self.spec.deploy),
            DeploymentState,
            timeout=timedelta(seconds=60),
            failure_phase=Phase.failed,
            what="reading the current deployment",
        )
        if current.stable != self.digest():
            self.status.previous_digest = current.stable
        else:
            self.status.previous_digest = current.detail.get("previous") or current.stable
        self.attest(
            VSA,
            {
                "verifier": {"id": "https://signoff.dev/worker"},
                "timeVerified": workflow.now().isoformat().replace("+00:00", "Z"),
                "resourceUri": f"signoff:{self.spec.service}@{self.digest()}",
                "policy": {"uri": "signoff:policies/release.rego", "digest": {"sha256": self.status.policy.policy_sha256 if self.status.policy else ""}},
                "inputAttestations": [{"uri": f"signoff:{self.args.release_id}#{a['predicateType']}", "digest": {"sha256": a["sha256"]}} for a in self.attestations],
                "verificationResult": "PASSED",
                "verifiedLevels": [f"SIGNOFF_TIER_{(self.status.tier or 'none').upper()}"] + (["SLSA_BUILD_LEVEL_2"] if self.spec.build else []),
                "approvals": [{"gate": g.spec.name, "by": sorted(a.by for a in g.status.approvals)} for g in self.gates],
            },
        )
        if self.spec.canary is None or not self.spec.canary.steps:
            await self.deploy(100)
        self.record("promotion", "started", [], {"previous": self.status.previous_digest})

    async def watch(self) -> None:
        """Run the canary steps and analyses; roll back by ourselves when they go bad."""
        if self.spec.canary is not None and self.spec.canary.steps:
            self.set_phase(Phase.canary)
            self.status.canary = CanaryStatus()
            runner = CanaryRunner(
                self.spec.canary,
                self.status.canary,
                release_id=self.args.release_id,
                service=self.spec.service,
                digest=self.digest(),
                on_inconclusive=self.status.policy.on_inconclusive if self.status.policy else "rollback",
                deploy=self.deploy,
                notify=self.notify,
                is_promote_requested=lambda: self.promote_requested,
                is_abort_requested=lambda: self.abort_request is not None,
                clear_promote=self.clear_promote,
                on_measurement=self.measurement_notice,
                is_frozen=lambda: self.canary_frozen,
                analyses_as_children=self.analysis_children,
            )
            follow = asyncio.create_task(self.follow_freezes()) if self.windowed else None
            try:
                outcome = await runner.run()
            finally:
                self.canary_done = True
            if follow is not None:
                await follow
            self.record(
                "canary_verdict",
                outcome.result,
                [outcome.reason] if outcome.reason else [],
                {"measurements": [m.model_dump(mode="json") for m in self.status.canary.analyses[-20:]]},
            )
            if outcome.result == "aborted":
                await self.roll_back(self.abort_reason())
                raise Stop(Phase.aborted, self.abort_reason())
            if outcome.result == "failed" and self.spec.canary.on_failure == "hold":
                # Gated on the new spec field: histories from before it never take this path.
                await self.hold(outcome.reason)
            elif outcome.result != "promoted":
                await self.roll_back(outcome.reason)
                raise Stop(Phase.rolled_back, outcome.reason)
            await self.deploy(100)
        self.check_abort()
        self.record("promotion", "stable", [f"{self.digest()} serves 100%"], {})

    async def hold(self, reason: str) -> None:
        """canary.on_failure: hold — weight 0 for the new digest, the previous one is not
        redeployed (its migrations may be irreversible). The gates' approvers decide: roll back, or
        roll forward to 100%; at the deadline the policy's default applies. Returns only when rolled forward."""
        assert self.spec.canary is not None
        await self.deploy(0)
        self.set_phase(Phase.held)
        now = workflow.now()
        default = self.status.policy.hold_default if self.status.policy else "rollback"
        self.status.hold = HoldStatus(reason=reason, since=now, deadline=now + self.spec.canary.hold_deadline, default=default)
        self.record("canary_hold", "held", [reason], {"deadline": self.status.hold.deadline.isoformat(), "default": default, "weight": 0})
        await self.notify(
            "held",
            f"{self.spec.service}: canary failed and is HELD at weight 0 (no rollback yet): {reason}. Decide by {self.status.hold.deadline.isoformat()} "
            f"with `signoff release resolve {self.args.release_id} --as EMAIL --rollback|--forward --reason TEXT`; then the policy default ({default}) applies.",
        )
        hold = self.status.hold
        try:
            await workflow.wait_condition(lambda: hold.decision is not None or self.abort_request is not None, timeout=self.spec.canary.hold_deadline)
        except asyncio.TimeoutError:
            hold.decision, hold.decided_by = default, "policy default"
            self.record("canary_hold", default, [f"nobody decided by {hold.deadline.isoformat()}; the policy default applies"], {})
        if hold.decision is None:  # aborted while held
            await self.roll_back(self.abort_reason())
            raise Stop(Phase.aborted, self.abort_reason())
        if hold.decision == "rollback":
            why = f"{reason}; rolled back after a hold, decided by {hold.decided_by}" + (f": {hold.decision_reason}" if hold.decision_reason else "")
            await self.roll_back(why)
            raise Stop(Phase.rolled_back, why)
        self.set_phase(Phase.canary)
        await self.notify("forward", f"{self.spec.service}: rolling forward despite the failed analysis, decided by {hold.decided_by}")

    @workflow.update(name="resolve_hold")
    async def resolve_hold(self, request: dict[str, Any]) -> dict[str, Any]:
        """A person's decision on a held canary: roll back or roll forward (signed, an approver)."""
        who = str(request.get("identity", "")).lower()
        decision, reason = str(request.get("decision", "")), str(request.get("reason", "")).strip()
        if decision not in ("rollback", "forward") or not reason:
            raise ApplicationError("resolving a hold needs --rollback or --forward, and a reason")
        why = await self.permitted(
            "resolve_hold", request, self.control_groups(), own="the requester cannot decide their own held release; ask an approver", what="decide this release"
        )
        if why is None and (self.status.hold is None or self.status.hold.decision is not None):
            why = f"release {self.args.release_id} is {self.status.phase.value}, not held waiting for a decision"
        if why is not None:
            self.refuse_control("resolve_hold", who, request, why)
        assert self.status.hold is not None
        self.status.hold.decision, self.status.hold.decided_by, self.status.hold.decision_reason = decision, who, reason  # type: ignore[assignment]
        self.record("canary_hold", decision, [reason], {"channel": request.get("channel"), **self.control_evidence(request)}, actor=who)
        return {"accepted": True, "reason": f"{decision} decided by {who}: {reason}"}

    async def roll_back(self, reason: str) -> None:
        """Weight 0, deploy the previous stable digest again, tell people, open an incident."""
        self.set_phase(Phase.rolling_back)
        previous = self.status.previous_digest
        if previous:
            await self.act(
                "rollback",
                RollbackRequest(release_id=self.args.release_id, service=self.spec.service, to_digest=previous, target=self.spec.deploy),
                DeploymentState,
                timeout=timedelta(minutes=5),
                failure_phase=Phase.failed,
                what="the rollback",
                retry=PATIENT,
                abortable=False,
            )
        else:
            await self.deploy(0)
        self.record("rollback", "rolled_back", [reason], {"to": previous, "target": self.spec.deploy.model_dump(mode="json")})
        await self.notify("rollback", f"{self.spec.service}: rolled back {self.digest()[:19]}… to {str(previous)[:19]}…: {reason}")
        self.jira.put(lambda: self.open_incident(reason))
        if self.spec.remediation_runbook:
            await self.remediate()

    async def remediate(self) -> None:
        """Start the release file's remediation runbook; it runs on after the release ends."""
        run_id = f"{self.args.release_id}-remediation"
        await workflow.start_child_workflow(
            "RunbookWorkflow",
            StartRunbook(
                run_id=run_id,
                runbook=self.spec.remediation_runbook or "",
                params={"service": self.spec.service},
                requested_by="signoff@automation",
                channel="api",
                triggered_by_release=self.args.release_id,
                search_attributes=self.args.search_attributes,
            ),
            id=run_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
        )
        self.status.remediation = run_id
        self.record("remediation", "started", [f"runbook {self.spec.remediation_runbook} as {run_id}"], {"runbook": self.spec.remediation_runbook})

    # ================================================================== deploy windows and freezes

    async def window_now(self, *, watch: bool) -> WindowState | None:
        """The deploy windows and freezes for this release, now (None in histories from before
        windows existed). `watch` asks the freeze keeper to signal us when freezes change."""
        if not self.windowed:
            return None
        config: WindowConfig = await workflow.execute_local_activity(
            "load_windows",
            WindowRequest(release_id=self.args.release_id, service=self.spec.service, environment=self.spec.environment, watch=watch),
            result_type=WindowConfig,
            start_to_close_timeout=timedelta(seconds=30),
        )
        self.freezes_changed = False
        self.freezes_now = freezes_for(config.freezes, self.spec.service, self.spec.environment, workflow.now())
        self.status.window = window_state(config.windows, config.freezes, service=self.spec.service, environment=self.spec.environment, at=workflow.now())
        return self.status.window

    async def follow_freezes(self) -> None:
        """While the canary runs: a freeze started with --pause-canaries holds it at its current
        weight (the runner waits before its next step) until the freeze ends or expires."""
        await self.window_now(watch=True)
        while not self.canary_done:
            now = workflow.now()
            paused = [f for f in freezes_for(self.freezes_now, self.spec.service, self.spec.environment, now) if f.pause_canaries]
            if bool(paused) != self.canary_frozen:
                self.canary_frozen = bool(paused)
                canary = self.status.canary
                why = f"freeze {paused[0].id} by {paused[0].by}: {paused[0].reason}" if paused else "the freeze ended"
                if canary is not None:
                    canary.paused, canary.pause_reason = self.canary_frozen, (f"held at weight {canary.weight} by {why}" if paused else "")
                self.record("canary_freeze", "paused" if paused else "resumed", [why], {"weight": canary.weight if canary else None})
                await self.notify("freeze_pause" if paused else "freeze_resume", f"{self.spec.service}: canary {'paused at its current weight' if paused else 'resumes'} ({why})")
            ends = [f.until for f in paused if f.until is not None]
            try:
                await workflow.wait_condition(lambda: self.freezes_changed or self.canary_done, timeout=(min(ends) - now) if ends else None)
            except asyncio.TimeoutError:
                pass
            if self.freezes_changed and not self.canary_done:
                await self.window_now(watch=True)

    async def hold_for_window(self) -> None:
        """Outside a deploy window or during a freeze, wait durably in `waiting_for_window` until it
        opens, a permitted person overrides it, or the gates' timeout passes."""
        state = await self.window_now(watch=not self.lean)
        if state is None or state.open:
            return
        if self.lean:  # waiting: be woken on a change, and see one made meanwhile
            state = await self.window_now(watch=True) or state
            if state.open:
                return
        self.set_phase(Phase.waiting_for_window)
        deadline = workflow.now() + max((g.spec.timeout for g in self.gates), default=timedelta(hours=24))
        self.record("window", "waiting", state.reasons, {"window": state.model_dump(mode="json"), "deadline": deadline.isoformat()})
        opens = f"; it opens by itself at {state.next_open.isoformat()}" if state.next_open else ""
        await self.notify("window_wait", f"{self.spec.service}: approved, but promotion waits ({'; '.join(state.reasons)}){opens}. Override: `signoff release override {self.args.release_id} --as EMAIL --reason TEXT`")
        while not state.open and self.status.window_override is None:
            wake = min(t for t in (state.next_open, deadline) if t is not None)
            try:
                await workflow.wait_condition(
                    lambda: self.freezes_changed or self.status.window_override is not None or self.abort_request is not None,
                    timeout=max(wake - workflow.now(), timedelta(seconds=1)),
                )
            except asyncio.TimeoutError:
                pass
            self.check_abort()
            if self.status.window_override is not None:
                break
            state = await self.window_now(watch=True) or state
            if not state.open and workflow.now() >= deadline:
                raise Stop(Phase.rejected, f"the deploy window did not open before the gate's timeout ({'; '.join(state.reasons)})")
        how = f"overridden by {self.status.window_override.by}: {self.status.window_override.reason}" if self.status.window_override else "the window is open"
        self.record("window", "resumed", [how], {"window": state.model_dump(mode="json")})
        await self.notify("window_resume", f"{self.spec.service}: promotion resumes ({how})")

    @workflow.signal(name="freezes_changed")
    def on_freezes_changed(self) -> None:
        self.freezes_changed = True

    @workflow.update(name="override_window")
    async def override_window(self, request: dict[str, Any]) -> dict[str, Any]:
        """A signed override of a closed window or freeze, by a member of the policy's override groups."""
        who = str(request.get("identity", "")).lower()
        reason = str(request.get("reason", "")).strip()
        if not reason:
            raise ApplicationError("an override needs a reason; say why this cannot wait for the window")
        groups = set(self.status.policy.override_groups) if self.status.policy else set()
        own = f"{who} asked for this release and cannot override its window; ask someone in {', '.join(sorted(groups)) or 'the override groups'}"
        why = await self.permitted("override_window", request, groups, own=own, what="the policy lets override a deploy window")
        if why is None and self.status.phase != Phase.waiting_for_window:
            why = f"release {self.args.release_id} is {self.status.phase.value}, not waiting for a window; there is nothing to override"
        if why is not None:
            self.refuse_control("override_window", who, request, why)
        channel = str(request.get("channel") or "cli")
        self.status.window_override = WindowOverride(by=who, reason=reason, channel=channel, at=workflow.now())
        self.record("override_window", "accepted", [reason], {"channel": channel, "window": self.status.window.model_dump(mode="json") if self.status.window else None, **self.control_evidence(request)}, actor=who)
        return {"accepted": True, "reason": f"window overridden by {who}: {reason}"}

    # ================================================================== Updates and queries

    @workflow.query(name="status")
    def query_status(self) -> ReleaseStatus:
        return self.status

    @workflow.update(name="submit_approval")
    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        await workflow.wait_condition(lambda: self.gates_ready or self.status.phase.is_final or self.past_gates())
        gate = self.pick_gate(attempt)
        if gate is None:
            reason = (
                f"release {self.args.release_id} is {self.status.phase.value}; it is not waiting for approval"
                if not self.gates_ready
                else f"release {self.args.release_id} has no open gate named {attempt.gate}"
            )
            return ApprovalResult(accepted=False, reason=reason)
        result = await gate.handle(attempt)
        self.update_awaiting()
        return result

    @submit_approval.validator
    def validate_approval(self, attempt: ApprovalAttempt) -> None:
        if attempt.release_id != self.args.release_id:
            raise ApplicationError(f"this is release {self.args.release_id}, not {attempt.release_id}")
        if "@" not in attempt.identity:
            raise ApplicationError("an approval needs the person's canonical identity (email)")
        if attempt.decision == "reject" and not attempt.reason.strip():
            raise ApplicationError("a rejection needs a reason")
        if attempt.digest is not None and not attempt.digest.startswith("sha256:"):
            raise ApplicationError("the digest must look like sha256:<hex>")
        gate = self.pick_gate(attempt) if self.gates_ready else None
        why = gate.screen(attempt) if gate is not None else None
        if why is not None:
            raise ApplicationError(why)

    @workflow.signal(name="agent_suspended")
    async def agent_suspended(self, notice: AgentSuspended) -> None:
        """A suspension of the agent that asked for this release: stop it like an abort (a gate
        closes and its approvers are told, a canary rolls back, a build is cancelled). The
        signal is only a nudge: the worker's registry must say the agent is suspended."""
        if self.spec.agent is None or self.spec.agent.id != notice.agent_id or self.status.phase.is_final or self.abort_request is not None:
            return
        standing: dict[str, Any] = await workflow.execute_local_activity(
            "agent_standing", notice.agent_id, start_to_close_timeout=timedelta(seconds=30), result_type=dict
        )
        if standing.get("status") != "suspended" or self.abort_request is not None:
            return
        by = str(standing.get("by") or "on-call")
        reason = f"agent {notice.agent_id} suspended: {standing.get('reason') or 'no reason given'}"
        self.abort_request = {"identity": by, "reason": reason, "channel": "suspension"}
        self.record("abort", "agent_suspended", [reason], {"control_id": notice.control_id, "phase": self.status.phase.value}, actor=by)

    @workflow.update(name="promote")
    async def promote_update(self, request: dict[str, Any]) -> dict[str, Any]:
        who = str(request.get("identity", "")).lower()
        if self.patches.has("authenticated-controls"):
            why, auth = await self.authorise_control("promote", request)
            if why is None and who in forbidden_approvers(self.spec.requested_by, self.spec):
                why = "the requester cannot promote their own release past a pause; ask an approver"
            if why is None and not (auth and auth.snapshot and auth.snapshot.groups_of(who) & self.control_groups()):
                why = f"{who} is not in the groups that may promote this release ({', '.join(sorted(self.control_groups()))})"
            if why is not None:
                self.refuse_control("promote", who, request, why)
        elif who in {self.spec.requested_by, *self.spec.change.co_requested_by}:
            raise ApplicationError("the requester cannot promote their own release past a pause; ask an approver")
        if self.status.phase != Phase.canary or not (self.status.canary and self.status.canary.paused):
            raise ApplicationError(f"release {self.args.release_id} is {self.status.phase.value}, not paused in its canary")
        self.promote_requested = True
        self.record("promote", "accepted", [f"promoted by {who}"], {"channel": request.get("channel"), **self.control_evidence(request)}, actor=who)
        return {"accepted": True, "reason": f"promotion requested by {who}"}

    @workflow.update(name="abort")
    async def abort_update(self, request: dict[str, Any]) -> dict[str, Any]:
        who = str(request.get("identity", "")).lower()
        reason = str(request.get("reason", "")).strip()
        if not reason:
            raise ApplicationError("an abort needs a reason")
        if self.patches.has("authenticated-controls"):
            why, auth = await self.authorise_control("abort", request)
            if why is None:
                starter = self.starter.id.lower() if self.starter else None
                groups = auth.snapshot.groups_of(who) if auth and auth.snapshot else set()
                allowed = who in forbidden_approvers(self.spec.requested_by, self.spec) or who == starter or groups & (self.control_groups() | {"on-call"})
                if not allowed:
                    why = f"{who} may not abort this release: only its requester, the agent that asked, an approver or on-call may"
            if why is not None:
                self.refuse_control("abort", who, request, why)
        if self.status.phase.is_final:
            raise ApplicationError(f"release {self.args.release_id} already ended ({self.status.phase.value})")
        if self.abort_request is None:
            self.abort_request = {"identity": who, "reason": reason, "channel": request.get("channel", "cli")}
            self.record("abort", "requested", [reason], {"channel": request.get("channel"), **self.control_evidence(request)}, actor=who)
        return {"accepted": True, "reason": f"abort requested by {who}: {reason}"}

    @workflow.signal(name="abort_request")
    async def abort_signal(self, request: dict[str, Any]) -> None:
        """The same signed abort as the `abort` Update, as a signal: a path that stays open even
        if the release's Update limit were ever reached. Checked exactly like the Update;
        signals that carry no proof are dropped unrecorded, and refusals stop being recorded
        after MAX_SIGNAL_REFUSALS."""
        if not isinstance(request.get("proof"), dict) or self.signal_refusals >= MAX_SIGNAL_REFUSALS:
            return
        try:
            await self.abort_update(request)
        except ApplicationError:
            self.signal_refusals += 1

    async def authorise_control(self, action: str, request: dict[str, Any]) -> tuple[str | None, AuthResult | None]:
        """A promote or abort is proven like an approval: signed for this action on this release."""
        from signoff.models import Proof

        raw = request.get("proof")
        proof = Proof.model_validate(raw) if isinstance(raw, dict) else None
        auth = await self.authenticate_proof(proof, {"action": action, "subject": self.args.release_id})
        who = str(request.get("identity", "")).lower()
        if not auth.ok:
            return auth.reason, auth
        if auth.nonce in self.used_nonces:
            return "this proof was already used once; sign a new request (replay refused)", auth
        if auth.identity.lower() != who:
            return f"the proof speaks for {auth.identity}, not {who}", auth
        self.used_nonces.add(auth.nonce)
        return None, auth

    async def permitted(self, action: str, request: dict[str, Any], groups: set[str], *, own: str, what: str) -> str | None:
        """Why a signed control request may not act (None when it may): its proof, the requester
        acting on their own release (`own`), or a person outside `groups`."""
        who = str(request.get("identity", "")).lower()
        why, auth = await self.authorise_control(action, request)
        if why is None and who in forbidden_approvers(self.spec.requested_by, self.spec):
            why = own
        if why is None and not (auth and auth.snapshot and auth.snapshot.groups_of(who) & groups):
            why = f"{who} is not in the groups {what} ({', '.join(sorted(groups)) or 'none'})"
        return why

    def refuse_control(self, action: str, who: str, request: dict[str, Any], why: str) -> None:
        """Record the refusal (status and signed log), then fail the Update with the sentence."""
        append_bounded(self.status, "refusals", RefusalRecord(by=who or "unknown", channel=str(request.get("channel") or "api"), at=workflow.now(), decision=action, reason=why))
        self.record(action, "refused", [why], {"channel": request.get("channel")}, actor=who or "unknown")
        raise ApplicationError(why)

    def control_groups(self) -> set[str]:
        """Who may continue a paused canary: the gates' approver groups, else the service's owners and SRE."""
        groups = {g for gate in self.gates for g in eligible_groups(gate.spec)}
        return groups or {f"{self.spec.service}-owners", "release-managers", "sre"}

    @staticmethod
    def control_evidence(request: dict[str, Any]) -> dict[str, Any]:
        proof = request.get("proof")
        return {"proof": proof} if isinstance(proof, dict) else {}

    # ================================================================== helpers

    def digest(self) -> str:
        return self.status.artifact_digest or "sha256:" + "0" * 64

    def sandbox_facts(self, what: str, network: bool) -> dict[str, Any]:
        """What the worker's policy chooses the sandbox profile on (the file only asks)."""
        spec = self.spec
        return {
            "command": what,
            "service": spec.service,
            "environment": spec.environment,
            "requester": spec.requested_by,
            "agent": None if spec.agent is None else {"id": spec.agent.id},
            "network_requested": network,
        }

    def workdir(self) -> str:
        base = self.args.base_dir
        if self.spec.working_dir:
            return self.spec.working_dir if self.spec.working_dir.startswith("/") else f"{base}/{self.spec.working_dir}"
        return base

    def past_gates(self) -> bool:
        order = [Phase.waiting_for_window, Phase.promoting, Phase.canary, Phase.held, Phase.rolling_back]
        return self.status.phase in order

    def pick_gate(self, attempt: ApprovalAttempt) -> ApprovalGate | None:
        """The named gate; otherwise the first open gate this person has not approved yet."""
        if attempt.gate:
            return next((g for g in self.gates if g.spec.name == attempt.gate), None)
        if not self.gates_ready:
            return None
        open_gates = [g for g in self.gates if g.status.state == "open"]
        who = attempt.identity.lower()
        pending = [g for g in open_gates if who not in {a.by for a in g.status.approvals}]
        return (pending or open_gates or self.gates or [None])[0]

    def set_phase(self, phase: Phase) -> None:
        self.status.phase = phase
        self.status.updated_at = workflow.now()
        append_bounded(self.status, "history", {"phase": phase.value, "at": workflow.now().isoformat()})
        self.set_attribute(PHASE, phase.value)

    def end(self, phase: Phase, reason: str) -> None:
        workflow.metric_meter().create_counter(
            "signoff_releases_finished", "Releases that reached a final phase", "releases"
        ).add(1, {"phase": phase.value, "service": self.spec.service, "tier": self.status.tier or "none"})
        self.set_phase(phase)
        self.status.outcome = phase.value
        self.status.reason = reason
        self.record("release_outcome", phase.value, [reason], {"previous": self.status.previous_digest})
        for gate in self.gates:
            if gate.status.state == "open":
                gate.status.state = "closed"
        self.update_awaiting()

    def update_awaiting(self) -> None:
        waiting = sorted({p for g in self.gates for p in g.awaiting()}) if self.gates_ready else []
        self.set_attribute(AWAITING, bounded_keywords(waiting))

    def set_attribute(self, key: Any, value: Any) -> None:
        """Upsert one search attribute (when the release keeps them); with the lean-release-history
        patch, only when its value changes."""
        if not self.args.search_attributes:
            return
        if self.lean:
            if self.attributes_set.get(key.name) == value:
                return
            self.attributes_set[key.name] = value
        workflow.upsert_search_attributes([key.value_set(value)])

    def check_abort(self) -> None:
        if self.abort_request is not None:
            raise Stop(Phase.aborted, self.abort_reason())

    def abort_reason(self) -> str:
        req = self.abort_request or {}
        return f"aborted by {req.get('identity', 'unknown')}: {req.get('reason', '')}"

    def clear_promote(self) -> None:
        self.promote_requested = False

    async def act(
        self,
        name: str,
        arg: Any,
        result_type: type,
        *,
        timeout: timedelta,
        failure_phase: Phase,
        what: str,
        heartbeat: timedelta | None = None,
        retry: RetryPolicy = ONCE_MORE,
        abortable: bool = True,
    ) -> Any:
        """Run one step's activity; an abort cancels it, a permanent failure ends the release."""
        handle = workflow.start_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry_policy=retry,
        )
        if abortable:
            await workflow.wait_condition(lambda: handle.done() or self.abort_request is not None)
            if not handle.done():
                handle.cancel()
                try:
                    await handle
                except (ActivityError, CancelledError):
                    pass
                raise Stop(Phase.aborted, self.abort_reason())
        try:
            return await handle
        except ActivityError as e:
            cause = e.cause
            message = getattr(cause, "message", None) or str(cause or e)
            self.killed_for_limit = getattr(cause, "type", None) == "Timeout"
            raise Stop(failure_phase, f"{what} failed: {message}") from None

    async def deploy(self, weight: int) -> None:
        state: DeploymentState = await self.act(
            "deploy",
            DeployRequest(
                release_id=self.args.release_id,
                service=self.spec.service,
                digest=self.digest(),
                weight=weight,
                target=self.spec.deploy,
                evidence=self.evidence() if weight > 0 else None,
            ),
            DeploymentState,
            timeout=timedelta(minutes=2),
            failure_phase=Phase.failed,
            what=f"deploying at weight {weight}",
            retry=RetryPolicy(maximum_attempts=3),
            abortable=False,
        )
        if self.status.canary is not None:
            self.status.canary.weight = weight
        self.record(
            "deploy", "deployed", [f"weight {weight}"], {"weight": weight, "stable": state.stable, "canary": state.canary, "target": self.spec.deploy.model_dump(mode="json")}
        )

    def attest(self, predicate_type: str, predicate: dict[str, Any]) -> None:
        """Record one piece of evidence as its own in-toto statement about the artifact (signed
        and chained in the log like every decision); the VSA at promotion lists them."""
        if not self.attesting:
            return
        self.attestations.append({"predicateType": predicate_type, "sha256": _sha256(repr(sorted(predicate.items())))})
        names = {TEST_RESULT: "test-result", VULNS: "vulns", CYCLONEDX: "sbom", SLSA_PROVENANCE: "provenance", VSA: "verification-summary"}
        self.record("attestation", names.get(predicate_type, "evidence"), [], {"predicateType": predicate_type, "predicate": predicate})

    def evidence(self) -> Evidence:
        """What the deploy activity re-verifies before shipping: the signed start, the facts the
        policy decided on, and every accepted approval's proof."""
        return Evidence(
            release_id=self.args.release_id,
            base_dir=self.args.base_dir,
            spec=self.spec,
            start_proof=self.args.proof,
            tests=self.status.tests,
            provenance=self.status.provenance,
            scans=self.status.scans,
            sbom=self.status.sbom,
            approvals=[ApprovalEvidence(gate=g.spec.name, identity=who, proof=p) for g in self.gates for who, p in g.proofs.items()],
            plan_sha256=self.status.plan_sha256,
        )

    def record(self, kind: str, outcome: str, reasons: list[str], evidence: dict[str, Any], actor: str | None = None) -> None:
        """Queue a signed decision record (written in order by the audit outbox)."""
        attempt = evidence.get("attempt") if isinstance(evidence, dict) else None
        if actor is None and isinstance(attempt, dict):
            actor_doc: dict[str, Any] = {"identity": attempt.get("identity"), "channel": attempt.get("channel")}
        elif actor is not None:
            actor_doc = {"identity": actor}
        else:
            actor_doc = {"orchestrator": "signoff", "requested_by": self.spec.requested_by}
            if self.spec.agent:
                actor_doc["agent"] = self.spec.agent.model_dump(mode="json")
        if self.status.policy and "policy_sha256" not in evidence:
            evidence = {**evidence, "policy_sha256": self.status.policy.policy_sha256}
        self.decisions.append(kind, outcome, reasons, evidence, actor_doc)

    async def gate_notice(self, gate: GateStatus, event: str) -> None:
        """Tell Slack and Jira about a gate; each channel's own queue keeps messages in order."""

        in_turn = self.patches.has(SLACK_EDIT_IN_TURN)

        def nothing_to_edit() -> bool:
            """Progress edits the message the "opened" notice posted; there is none when Slack is
            not configured or refused the post."""
            return event != "opened" and gate.slack_ts is None and self.gate_opened_notice_done(gate)

        async def to_slack() -> None:
            if in_turn and nothing_to_edit():
                return
            ref: ChatRef = await workflow.execute_activity(
                "slack_gate_notice",
                GateNotice(status=self.status, gate=gate, event=event, escalate_to=self._escalate_to(gate), directory_path=self.args.directory_path),  # type: ignore[arg-type]
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=8, maximum_interval=timedelta(seconds=30)),
                result_type=ChatRef,
            )
            if event == "opened":
                self.slack_opened.add(gate.name)
                if ref.ts:
                    gate.slack_channel, gate.slack_ts = ref.channel, ref.ts

        async def to_jira() -> None:
            ref: ChatRef = await workflow.execute_activity(
                "jira_gate_notice",
                GateNotice(status=self.status, gate=gate, event=event, directory_path=self.args.directory_path),  # type: ignore[arg-type]
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=PATIENT,
                result_type=ChatRef,
            )
            if ref.key:
                gate.jira_key = ref.key

        # With nothing to edit no activity runs. That is decided in to_slack, in the queue's order
        # (SLACK_EDIT_IN_TURN); runs from before decide it here, as they did.
        if in_turn or not (nothing_to_edit() and self.patches.has("slack-progress-needs-message")):
            self.slack.put(to_slack)
        if "jira" in gate.channels and event in ("opened", "closed"):
            self.jira.put(to_jira)

    def notice_failed(self, channel: str, message: str) -> None:
        """A notice that never reached people is a decision-relevant fact: show and record it."""
        append_bounded(self.status, "history", {"notice_failed": channel, "reason": message, "at": workflow.now().isoformat()})
        self.record("notification", "failed", [f"{channel}: {message}"], {"channel": channel})

    def gate_opened_notice_done(self, gate: GateStatus) -> bool:
        return gate.name in self.slack_opened

    def _escalate_to(self, gate: GateStatus) -> str | None:
        return next((g.spec.escalate_to for g in self.gates if g.status is gate), None)

    async def notify(self, kind: str, text: str) -> None:
        # A canary waiting on people (an indefinite pause, an inconclusive analysis) asks the
        # gates' approvers by name; other notices go to the channel without mentions.
        asking = kind in ("paused", "inconclusive", "inconclusive_hold")
        mention = sorted({grp for g in self.gates for grp in [*g.spec.from_groups, *g.spec.quotas]}) if asking else []

        async def to_slack() -> None:
            await workflow.execute_activity(
                "slack_notify",
                NotifyRequest(release_id=self.args.release_id, kind=kind, text=text, status=self.status.for_notice(), mention=mention),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=8, maximum_interval=timedelta(seconds=30)),
                result_type=ChatRef,
            )

        self.slack.put(to_slack)

    def measurement_notice(self, measurement: Measurement) -> None:
        """Each canary measurement, explained (query, value, condition, verdict), as a reply in
        the release's own Slack thread; the first one starts the thread."""
        if not self.windowed:
            return
        when = measurement.at.strftime("%H:%M:%S") if measurement.at else ""
        text = f"step {measurement.step} {when}: {measurement.explain()}"

        async def to_slack() -> None:
            ref: ChatRef = await workflow.execute_activity(
                "slack_notify",
                NotifyRequest(release_id=self.args.release_id, kind="measurement", text=text, status=self.status, channel=self.measure_thread[0], thread_ts=self.measure_thread[1]),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=8, maximum_interval=timedelta(seconds=30)),
                result_type=ChatRef,
            )
            if self.measure_thread[1] is None and ref.ts:
                self.measure_thread = (ref.channel, ref.ts)

        self.slack.put(to_slack)

    async def open_incident(self, reason: str) -> None:
        ref: ChatRef = await workflow.execute_activity(
            "jira_open_incident",
            NotifyRequest(release_id=self.args.release_id, kind="incident", text=reason, status=self.status.for_notice()),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=PATIENT,
            result_type=ChatRef,
        )
        if ref.key:
            self.status.incident = ref.key
            await self.notify("incident", f"incident {ref.key} opened for {self.args.release_id}")
