"""RunbookWorkflow: a certified runbook, run durably with checks before and after.

    prepare (certified? parameters valid?) → authorise → gate (optional) → pre-checks → steps
    → post-checks → succeeded   (or refused / rejected / failed + escalation)

Nothing uncertified runs: `prepare_runbook` compares the file's content hash with the signed
certification lock before any step is rendered. Steps come from a fixed registry of actions
(`run_runbook_step`); every step, check and refusal is a signed decision record. Completed
steps are activities in history, so a worker killed mid-run resumes without repeating them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from signoff.models import (
        AnalysisRequest,
        ApprovalAttempt,
        ApprovalResult,
        AuthRequest,
        AuthResult,
        ChatRef,
        DirectorySnapshot,
        GateNotice,
        GateStatus,
        Measurement,
        NotifyRequest,
        ReleaseStatus,
        RunbookCheckStatus,
        RunbookStatus,
        RunbookStepStatus,
        StartRunbook,
        append_bounded,
    )
    from signoff.runbooks import PreparedRunbook, PrepareRunbook, RunbookCheckSpec, StepRequest, StepResult
    from signoff.search_attributes import PHASE
    from signoff.trust.evidence import run_expectations

from workflows.canary import AnalysisPhase, AnalysisState
from workflows.gate import ApprovalGate
from workflows.outbox import PATIENT, DecisionLog, Outbox


AUTOMATION_GROUP = "automation"


class RunEnded(Exception):
    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


@workflow.defn(name="RunbookWorkflow")
class RunbookWorkflow:
    @workflow.init
    def __init__(self, args: StartRunbook) -> None:
        self.args = args
        self.status = RunbookStatus(
            run_id=args.run_id,
            runbook=args.runbook,
            requested_by=args.requested_by.lower(),
            channel=args.channel,
            dry_run=args.dry_run,
        )
        self.prepared: PreparedRunbook | None = None
        self.gate: ApprovalGate | None = None
        self.gate_ready = False
        self.finished = False
        self.audit = Outbox("audit")
        self.chat = Outbox("chat", on_failure=self.notice_failed)
        self.jira = Outbox("jira", on_failure=self.notice_failed)
        self.decisions = DecisionLog(
            self.audit,
            subject_name=f"runbook:{args.runbook}",
            subject_digest=lambda: "sha256:" + (self.status.sha256 or "0" * 64),
        )

    @workflow.run
    async def run(self, args: StartRunbook) -> RunbookStatus:
        self.status.workflow_id = workflow.info().workflow_id
        drains = [asyncio.create_task(box.run(lambda: self.finished)) for box in (self.audit, self.chat, self.jira)]
        try:
            await self.prepare()
            await self.authorise()
            await self.ask()
            await self.check("precheck")
            await self.steps()
            await self.check("postcheck")
            self.end("succeeded", "dry run: nothing was changed" if args.dry_run else "every step ran and the post-checks passed")
        except RunEnded as e:
            self.end(e.phase, e.reason)
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and all(b.drained() for b in (self.audit, self.chat, self.jira)))
        self.finished = True
        await asyncio.gather(*drains)
        return self.status

    async def prepare(self) -> None:
        """Certified, known, valid parameters — or refused with the reason (and an alert)."""
        prepared: PreparedRunbook = await workflow.execute_activity(
            "prepare_runbook",
            PrepareRunbook(run_id=self.args.run_id, runbook=self.args.runbook, params=self.args.params),
            result_type=PreparedRunbook,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        self.prepared = prepared
        self.status.version, self.status.sha256 = prepared.version, prepared.sha256
        self.status.certified_by, self.status.params = prepared.certified_by, prepared.params
        self.status.steps = [RunbookStepStatus(name=s.name, action=s.action) for s in prepared.steps]
        self.status.checks = [RunbookCheckStatus(name=c.name, stage="precheck") for c in prepared.prechecks] + [
            RunbookCheckStatus(name=c.name, stage="postcheck") for c in prepared.postchecks
        ]
        if prepared.refused:
            self.alert(f"runbook {self.args.runbook} refused for {self.status.requested_by}: {prepared.refused}")
            raise RunEnded("refused", prepared.refused)
        self.record("runbook_certified", "ok", [f"certified by {prepared.certified_by}"], {"sha256": prepared.sha256, "version": prepared.version})

    async def authorise(self) -> None:
        if workflow.patched("authenticated-runbook-run"):
            await self.authorise_proven()
            return
        assert self.prepared is not None
        snap: DirectorySnapshot = await workflow.execute_local_activity(
            "load_directory", self.args.directory_path, result_type=DirectorySnapshot, start_to_close_timeout=timedelta(seconds=10)
        )
        who = self.status.requested_by
        allowed = set(self.prepared.allowed_groups)
        if self.args.triggered_by_release:
            if AUTOMATION_GROUP not in allowed:
                reason = f"{self.args.runbook} is not certified for automatic remediation (its allowed_groups lack '{AUTOMATION_GROUP}')"
                self.alert(f"remediation for {self.args.triggered_by_release} refused: {reason}")
                raise RunEnded("refused", reason)
            self.record("runbook_authorised", "ok", [f"remediation after rollback of {self.args.triggered_by_release}"], {"directory_sha256": snap.sha256})
            return
        if not (snap.groups_of(who) & allowed):
            reason = f"{who} is not in the groups allowed to run {self.args.runbook} ({', '.join(sorted(allowed))})"
            self.alert(f"runbook {self.args.runbook} refused: {reason}")
            raise RunEnded("refused", reason)
        self.record("runbook_authorised", "ok", [f"{who} is in {', '.join(sorted(snap.groups_of(who) & allowed))}"], {"directory_sha256": snap.sha256})

    async def authorise_proven(self) -> None:
        """Who runs this? A release's remediation is recognised by its parent workflow, as
        Temporal reports it (no input field can claim it); anyone else proves who they are."""
        assert self.prepared is not None
        allowed = set(self.prepared.allowed_groups)
        parent = workflow.info().parent
        if parent is not None:
            # A release's automatic remediation: allowed only for runbooks certified for it, so a
            # release file cannot name a runbook its requester could not run.
            if AUTOMATION_GROUP not in allowed:
                reason = f"{self.args.runbook} is not certified for automatic remediation (its allowed_groups lack '{AUTOMATION_GROUP}')"
                self.alert(f"remediation for {parent.workflow_id} refused: {reason}")
                raise RunEnded("refused", reason)
            self.record("runbook_authorised", "ok", [f"remediation after rollback of {parent.workflow_id}"], {"parent": parent.workflow_id})
            return
        auth: AuthResult = await workflow.execute_local_activity(
            "authenticate_request",
            AuthRequest(proof=self.args.proof, expect=run_expectations(self.args)),
            result_type=AuthResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
        who = self.status.requested_by
        if not auth.ok:
            reason = f"the request was refused: {auth.reason}"
        elif auth.identity.lower() != who.lower():
            reason = f"the proof speaks for {auth.identity}, not {who}"
        else:
            reason = None
        groups: set[str] = set()
        if reason is None:
            if auth.kind == "agent" and auth.agent is not None:
                groups = set(auth.agent.groups)
            elif auth.snapshot is not None:
                groups = auth.snapshot.groups_of(who)
            if not (groups & allowed):
                reason = f"{who} is not in the groups allowed to run {self.args.runbook} ({', '.join(sorted(allowed))})"
        if reason is not None:
            self.alert(f"runbook {self.args.runbook} refused: {reason}")
            raise RunEnded("refused", reason)
        self.status.channel = auth.channel
        self.record(
            "runbook_authorised",
            "ok",
            [f"{who} is in {', '.join(sorted(groups & allowed))}"],
            {"principal": auth.principal, "method": auth.method, "proof": self.args.proof.model_dump(mode="json") if self.args.proof else None},
        )

    async def ask(self) -> None:
        assert self.prepared is not None
        if self.prepared.gate is None or self.args.dry_run:
            return
        self.set_phase("awaiting_approval")
        self.gate = ApprovalGate.create(
            self.prepared.gate,
            forbidden={self.status.requested_by},
            directory_path=self.args.directory_path or "",
            current_digest=lambda: None,
            notify=self.gate_notice,
            record=self.record,
        )
        self.status.gates = [self.gate.status]
        await self.gate.open()
        self.gate_ready = True
        outcome = await self.gate.wait()
        self.gate_ready = False
        self.record("gate_outcome", outcome, [self.gate.status.progress], {"gate": self.gate.spec.name})
        if outcome != "approved":
            raise RunEnded("rejected", f"gate {self.gate.spec.name} {outcome}")

    async def check(self, stage: str) -> None:
        """Pre-checks: is the system in the state the runbook expects? Post-checks: did it work?"""
        assert self.prepared is not None
        specs: list[RunbookCheckSpec] = self.prepared.prechecks if stage == "precheck" else self.prepared.postchecks
        if not specs:
            return
        self.set_phase("prechecks" if stage == "precheck" else "postchecks")
        if stage == "postcheck" and self.args.dry_run:
            for c in self.status.checks:
                if c.stage == "postcheck":
                    c.detail = "dry run: post-checks are not run because nothing changed"
            return
        for spec in specs:
            entry = next(c for c in self.status.checks if c.name == spec.name and c.stage == stage)
            entry.state = "running"
            phase, detail = await self.measure(spec, entry)
            entry.state, entry.detail = phase.value, detail  # type: ignore[assignment]
            self.record(stage, phase.value, [detail], {"check": spec.name, "values": [m.value for m in entry.measurements]})
            if phase is not AnalysisPhase.successful:
                reason = f"{stage} {spec.name} {phase.value}: {detail}"
                if stage == "postcheck":
                    await self.escalate(reason)
                raise RunEnded("failed", reason)

    async def measure(self, spec: RunbookCheckSpec, entry: RunbookCheckStatus) -> tuple[AnalysisPhase, str]:
        """A check is finite (`count` 1 to 60, errors bounded by consecutive_error_limit), so it is
        measured here rather than in an AnalysisWorkflow child; its list is capped all the same."""
        state = AnalysisState.for_spec(spec.spec)
        if spec.spec.initial_delay:
            await workflow.sleep(spec.spec.initial_delay)
        while True:
            m: Measurement = await workflow.execute_activity(
                "run_analysis",
                AnalysisRequest(release_id=self.args.run_id, name=spec.name, spec=spec.spec, service=str(self.status.params.get("service", "")), digest=""),
                result_type=Measurement,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
            append_bounded(entry, "measurements", m)
            if state.record(m.verdict).completed:
                return state.phase, f"{m.message or state.summary()} (last value {m.value})"
            await workflow.sleep(state.next_delay(spec.spec.interval))

    async def steps(self) -> None:
        assert self.prepared is not None
        self.set_phase("running")
        for step, entry in zip(self.prepared.steps, self.status.steps):
            entry.state = "running"
            try:
                result = await self.run_step(step)
            except ActivityError as e:
                message = getattr(e.cause, "message", None) or str(e.cause or e)
                entry.state, entry.detail = "failed", message
                for later in self.status.steps[self.status.steps.index(entry) + 1 :]:
                    later.state = "skipped"
                self.record("runbook_step", "failed", [message], {"step": step.name, "action": step.action})
                await self.escalate(f"step {step.name} ({step.action}) failed: {message}")
                raise RunEnded("failed", f"step {step.name} failed: {message}")
            entry.state, entry.detail = result.state, result.detail
            self.record("runbook_step", result.state, [result.detail], {"step": step.name, "action": step.action, "before": result.before, "after": result.after})
            if step.action == "notify" and result.text and not self.args.dry_run:
                self.post(result.text)
            self.post(f"{'[dry run] ' if self.args.dry_run else ''}step {step.name}: {result.detail}")

    async def run_step(self, step: Any) -> StepResult:
        """One step. The activity's own retries absorb crashes and timeouts (a killed worker);
        the step's `retries` re-run it after the action itself failed."""
        assert self.prepared is not None
        failures = 0
        while True:
            try:
                return await workflow.execute_activity(
                    "run_runbook_step",
                    StepRequest(
                        run_id=self.args.run_id,
                        runbook=self.prepared.name,
                        version=self.prepared.version,
                        step=step,
                        dry_run=self.args.dry_run,
                        runbook_dir=self.prepared.runbook_dir,
                        target=self.prepared.target,
                    ),
                    result_type=StepResult,
                    start_to_close_timeout=step.timeout,
                    heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)),
                )
            except ActivityError:
                failures += 1
                if failures > step.retries:
                    raise
                await workflow.sleep(timedelta(seconds=2))

    # ------------------------------------------------------------------ Updates and queries

    @workflow.query(name="status")
    def query_status(self) -> RunbookStatus:
        return self.status

    @workflow.update(name="submit_approval")
    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        await workflow.wait_condition(lambda: self.gate_ready or self.status.phase not in ("starting", "awaiting_approval"))
        if self.gate is None or not self.gate_ready:
            return ApprovalResult(accepted=False, reason=f"runbook run {self.args.run_id} is {self.status.phase}; it is not waiting for approval")
        return await self.gate.handle(attempt)

    @submit_approval.validator
    def validate_approval(self, attempt: ApprovalAttempt) -> None:
        if attempt.release_id != self.args.run_id:
            raise ApplicationError(f"this is runbook run {self.args.run_id}, not {attempt.release_id}")
        if attempt.decision == "reject" and not attempt.reason.strip():
            raise ApplicationError("a rejection needs a reason")
        why = self.gate.screen(attempt) if self.gate is not None and self.gate_ready else None
        if why is not None:
            raise ApplicationError(why)

    # ------------------------------------------------------------------ helpers

    def set_phase(self, phase: str) -> None:
        self.status.phase = phase  # type: ignore[assignment]
        if self.args.search_attributes:
            workflow.upsert_search_attributes([PHASE.value_set(phase)])

    def end(self, phase: str, reason: str) -> None:
        self.set_phase(phase)
        self.status.outcome, self.status.reason = phase, reason
        self.record("runbook_outcome", phase, [reason], {"dry_run": self.args.dry_run})
        self.post(f"runbook {self.args.runbook} ({self.args.run_id}) {phase}: {reason}")

    def record(self, kind: str, outcome: str, reasons: list[str], evidence: dict[str, Any], actor: str | None = None) -> None:
        attempt = evidence.get("attempt")
        actor_doc = (
            {"identity": attempt.get("identity"), "channel": attempt.get("channel")}
            if isinstance(attempt, dict)
            else {"identity": actor or self.status.requested_by, "channel": self.args.channel}
        )
        self.decisions.append(kind, outcome, reasons, {**evidence, "run_id": self.args.run_id, "dry_run": self.args.dry_run}, actor_doc)

    def post(self, text: str) -> None:
        async def send() -> None:
            await workflow.execute_activity(
                "slack_notify",
                NotifyRequest(
                    release_id=self.args.run_id,
                    kind="runbook",
                    text=text,
                    channel=self.args.reply_to.get("channel"),
                    thread_ts=self.args.reply_to.get("ts"),
                ),
                result_type=ChatRef,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=8, maximum_interval=timedelta(seconds=30)),
            )

        self.chat.put(send)

    def notice_failed(self, channel: str, message: str) -> None:
        self.record("notification", "failed", [f"{channel}: {message}"], {"channel": channel})

    def alert(self, text: str) -> None:
        self.post(f":rotating_light: {text}")

    async def escalate(self, reason: str) -> None:
        """A failed run is escalated: an alert in chat and, when Jira is configured, an incident."""
        self.alert(f"runbook {self.args.runbook} failed and needs a person: {reason}")

        async def incident() -> None:
            ref: ChatRef = await workflow.execute_activity(
                "jira_open_incident",
                NotifyRequest(release_id=self.args.run_id, kind="runbook_failed", text=reason),
                result_type=ChatRef,
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=PATIENT,
            )
            if ref.key:
                self.status.incident = ref.key

        self.jira.put(incident)

    async def gate_notice(self, gate: GateStatus, event: str) -> None:
        view = ReleaseStatus(
            release_id=self.args.run_id,
            service=str(self.status.params.get("service", self.args.runbook)),
            requested_by=self.status.requested_by,
            change_summary=f"runbook {self.args.runbook} {self.status.version} with {self.status.params}",
            phase="awaiting_approval",  # type: ignore[arg-type]
            gates=[gate],
        )

        async def send() -> None:
            ref: ChatRef = await workflow.execute_activity(
                "slack_gate_notice",
                GateNotice(status=view, gate=gate, event=event, directory_path=self.args.directory_path),  # type: ignore[arg-type]
                result_type=ChatRef,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=8, maximum_interval=timedelta(seconds=30)),
            )
            if event == "opened" and ref.ts:
                gate.slack_channel, gate.slack_ts = ref.channel, ref.ts

        self.chat.put(send)
