"""Multi-signer approval gates, reusable by releases and runbooks.

Two layers:
- pure rules (`judge_attempt`, `quorum_met`, `merge_gates`) with no Temporal in them, so they are
  unit- and property-tested directly;
- `ApprovalGate`, the workflow-side object that opens a gate, takes attempts from the
  `submit_approval` Update handler, and waits on durable timers for reminders, escalation and
  expiry.

Authorisation lives here, inside the workflow, so every attempt (accepted or refused, with the
reason) is part of the workflow's history and of ReleaseStatus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from signoff.gates import eligible_groups, judge_attempt, merge_gates, progress_text, quorum_met
    from signoff.trust.proofs import request_of
    from signoff.trust.registry import Registry
    from signoff.trust.verify import authenticate
    from signoff.models import (
        append_bounded,
        ApprovalAttempt,
        ApprovalRecord,
        ApprovalResult,
        AuthRequest,
        AuthResult,
        DirectorySnapshot,
        GateSpec,
        GateStatus,
        Proof,
        RefusalRecord,
        TrustSnapshot,
    )

#: How old the principals a gate verifies against may be before it reads them again.
TRUST_TTL = timedelta(seconds=60)
#: Refused attempts recorded per principal and gate; more are turned away unrecorded.
MAX_REFUSALS_PER_PRINCIPAL = 20

__all__ = ["ApprovalGate", "eligible_groups", "judge_attempt", "merge_gates", "progress_text", "quorum_met"]

# --------------------------------------------------------------------------- workflow side

Notify = Callable[[GateStatus, str], Awaitable[None]]
Record = Callable[[str, str, list[str], dict], None]


@dataclass
class ApprovalGate:
    """One gate inside a workflow. The owner calls `open()`, routes Update attempts to
    `handle()`, and awaits `wait()` for the outcome ('approved', 'rejected', 'expired')."""

    spec: GateSpec
    status: GateStatus
    forbidden: set[str]
    directory_path: str
    current_digest: Callable[[], str | None]
    notify: Notify
    record: Record
    cancelled: Callable[[], bool] = lambda: False
    current_plan: Callable[[], str | None] = lambda: None
    people_groups: dict[str, set[str]] = field(default_factory=dict)
    used_nonces: set[str] = field(default_factory=set)
    proofs: dict[str, Proof] = field(default_factory=dict)
    signed: set[str] = field(default_factory=set)
    patched: Callable[[str], bool] = workflow.patched

    @classmethod
    def create(cls, spec: GateSpec, **kwargs: object) -> "ApprovalGate":
        status = GateStatus(
            name=spec.name,
            state="pending",
            required=spec.required,
            quotas=dict(spec.quotas),
            from_groups=list(spec.from_groups),
            channels=list(spec.channels),
            min_signed=spec.min_signed,
        )
        return cls(spec=spec, status=status, **kwargs)  # type: ignore[arg-type]

    async def _snapshot(self) -> DirectorySnapshot:
        return await workflow.execute_local_activity(
            "load_directory",
            self.directory_path,
            result_type=DirectorySnapshot,
            start_to_close_timeout=timedelta(seconds=10),
        )

    async def _current_snapshot(self, seen_sha256: str | None) -> DirectorySnapshot:
        """Membership as of this attempt. The channel that authenticated the person read the
        directory just now; if its hash is the one our last snapshot has, the file has not
        changed and the snapshot is current. Otherwise (or unknown) read the file again."""
        last: DirectorySnapshot | None = getattr(self, "last_snapshot", None)
        if last is not None and seen_sha256 is not None and seen_sha256 == last.sha256 and self.patched("reuse-directory-snapshot"):
            return last  # patched: histories from before this change re-read on every attempt
        self.last_snapshot = await self._snapshot()
        return self.last_snapshot

    async def _load_trust(self) -> TrustSnapshot:
        self.trust = await workflow.execute_local_activity("load_trust", "", result_type=TrustSnapshot, start_to_close_timeout=timedelta(seconds=10))
        self.trust_at = workflow.now()
        self.last_snapshot = self.trust.directory
        return self.trust

    async def _fresh_trust(self) -> TrustSnapshot:
        """The principals as of at most TRUST_TTL ago: re-read through the worker when older.
        Staleness is bounded and never chosen by a caller; the closing approval re-checks every
        counted approver against the files as they are (`_still_met`), and the deploy activity
        re-checks again before shipping."""
        trust: TrustSnapshot | None = getattr(self, "trust", None)
        if trust is None or workflow.now() - self.trust_at >= TRUST_TTL:
            trust = await self._load_trust()
        return trust

    async def open(self) -> None:
        if self.patched("authenticated-attempts"):
            snap = (await self._load_trust()).directory
        else:
            snap = await self._current_snapshot(None)
        now = workflow.now()
        self.status.state = "open"
        self.status.opened_at = now
        self.status.deadline = now + self.spec.timeout
        self.status.directory_sha256 = snap.sha256
        self.status.progress = progress_text(self.spec, self.status, self.people_groups)
        self.eligible_now = self._eligible(snap)
        await self.notify(self.status, "opened")

    def _eligible(self, snap: DirectorySnapshot) -> set[str]:
        groups = eligible_groups(self.spec)
        people = set(snap.people) if not groups else {m for g in groups for m in snap.groups.get(g, [])}
        return people - self.forbidden

    def awaiting(self) -> set[str]:
        if self.status.state != "open":
            return set()
        return getattr(self, "eligible_now", set()) - {a.by for a in self.status.approvals}

    async def handle(self, attempt: ApprovalAttempt) -> ApprovalResult:
        """Authenticate the attempt's proof, then judge it against the directory as it is now."""
        if not self.patched("authenticated-attempts"):
            return await self._apply(attempt, await self._current_snapshot(attempt.directory_sha256), auth=None)
        if attempt.proof is not None and attempt.proof.oidc_token:
            # A token needs its issuer's JWKS: the worker verifies it (a local activity).
            auth: AuthResult = await workflow.execute_local_activity(
                "authenticate_request",
                AuthRequest(proof=attempt.proof, expect=self.expectations(attempt)),
                result_type=AuthResult,
                start_to_close_timeout=timedelta(seconds=30),
            )
            trust = await self._fresh_trust()
            why = self._problem(attempt, auth, trust.directory)
        else:
            # A signature is checked right here, deterministically, against the worker's
            # registry as last read: no round trip on the approver's critical path. A refusal
            # is never based on an old copy: it is re-read and the attempt judged again (someone
            # just added to a group, or a key just registered, counts at once).
            loaded_at = getattr(self, "trust_at", None)
            trust = await self._fresh_trust()
            auth = authenticate(attempt.proof, expect=self.expectations(attempt), registry=Registry.from_snapshot(trust), now=workflow.now())
            why = self._problem(attempt, auth, trust.directory)
            if why is not None and self.trust_at == loaded_at:
                trust = await self._load_trust()
                auth = authenticate(attempt.proof, expect=self.expectations(attempt), registry=Registry.from_snapshot(trust), now=workflow.now())
                why = self._problem(attempt, auth, trust.directory)
        snap = trust.directory
        if why is not None:
            return self._refuse(attempt, why, snap, auth)
        self.used_nonces.add(auth.nonce)
        return await self._apply(attempt, snap, auth=auth)

    def screen(self, attempt: ApprovalAttempt) -> str | None:
        """Why an attempt is turned away *before* it reaches the workflow's history (the Update
        validator), or None to let the handler judge and record it.

        Only attempts that prove nobody are turned away here: no proof, or a signed proof that
        does not verify against the principals this gate last read (less than TRUST_TTL ago), or
        one already used. They are unattributable noise; writing each one down is what let junk
        Updates fill a release's history and exhaust Temporal's per-workflow Update limit, after
        which real approvals and aborts failed. Attributable attempts (a valid proof by someone
        the rules refuse) are still judged and recorded by the handler, up to
        MAX_REFUSALS_PER_PRINCIPAL each. OIDC tokens need the issuer's keys (an activity), so
        they always go to the handler."""
        trust: TrustSnapshot | None = getattr(self, "trust", None)
        if attempt.proof is None:
            return "this approval carries no proof of who sent it; sign it (`signoff approve` does) or use Slack or Jira"
        if attempt.proof.oidc_token or trust is None or workflow.now() - self.trust_at >= TRUST_TTL:
            return None
        auth = authenticate(attempt.proof, expect=self.expectations(attempt), registry=Registry.from_snapshot(trust), now=workflow.now())
        if not auth.ok:
            return f"{auth.reason} (not recorded; if your key was registered in the last minute, try again in a minute)"
        if auth.nonce in self.used_nonces:
            return "this proof was already used once; a proof is good for one request, so sign a new one (replay refused)"
        refused = sum(1 for r in self.status.refusals if r.by == auth.identity)
        if refused >= MAX_REFUSALS_PER_PRINCIPAL:
            return f"{auth.identity} has had {refused} attempts on gate {self.spec.name} refused; further ones are not recorded"
        return None

    def _problem(self, attempt: ApprovalAttempt, auth: AuthResult, snap: DirectorySnapshot) -> str | None:
        """Why the attempt would be refused: its proof, or the gate's rules on this directory."""
        why = self._proof_problem(attempt, auth)
        if why is not None:
            return why
        who = attempt.identity.lower()
        return judge_attempt(
            self.spec,
            self.status,
            attempt,
            person_groups=snap.groups_of(who),
            person_known=who in snap.people,
            forbidden=self.forbidden,
            current_digest=self.current_digest(),
        )

    def expectations(self, attempt: ApprovalAttempt) -> dict[str, object]:
        """What the attempt's proof must have signed: this decision, on this release and gate,
        for the digest the person saw, through the channel it arrives on."""
        return {
            "action": attempt.decision,
            "subject": attempt.release_id,
            "gate": attempt.gate,
            "digest": attempt.digest,
            "plan": attempt.plan,
            "channel": attempt.channel,
            "body": {"reason": attempt.reason},
        }

    def _proof_problem(self, attempt: ApprovalAttempt, auth: AuthResult) -> str | None:
        claimed = attempt.identity.lower()
        if not auth.ok:
            return auth.reason
        if auth.kind == "agent":
            return f"agent {auth.id} cannot approve; approvals come from people"
        if auth.identity != claimed:
            return f"the proof speaks for {auth.identity}, not {claimed}"
        if auth.nonce in self.used_nonces:
            return "this proof was already used once; a proof is good for one request, so sign a new one (replay refused)"
        if attempt.channel == "jira":
            ticket = (auth.request.get("external") or {}).get("ticket")
            if not self.status.jira_key or ticket != self.status.jira_key:
                return f"Jira ticket {ticket} is not gate {self.spec.name}'s ticket ({self.status.jira_key or 'none yet'}); act on the gate's own ticket"
        if attempt.decision == "approve" and self.current_digest() is not None and not attempt.digest:
            return "an approval must name the artifact digest you reviewed; approve again with the digest"
        plan = self.current_plan()
        if attempt.decision == "approve" and plan is not None and attempt.plan != plan:
            if not attempt.plan:
                return "an approval must name the plan hash you reviewed (release status shows it); approve again from the current request"
            return f"you reviewed plan {attempt.plan[:19]}…, but the release now runs plan {plan[:19]}…; review the current plan and decide again"
        return None

    def _refuse(self, attempt: ApprovalAttempt, reason: str, snap: DirectorySnapshot, auth: AuthResult | None) -> ApprovalResult:
        who = attempt.identity.lower()
        now = workflow.now()
        self._count(attempt, "refused")
        append_bounded(self.status, "refusals", RefusalRecord(by=who, channel=attempt.channel, at=now, decision=attempt.decision, reason=reason))
        self.record(
            "approval_attempt",
            "refused",
            [reason],
            {"attempt": attempt.model_dump(mode="json", exclude={"proof"}), **self._evidence(attempt, snap, auth)},
        )
        return ApprovalResult(accepted=False, reason=reason, gate=self.status)

    def _count(self, attempt: ApprovalAttempt, outcome: str) -> None:
        workflow.metric_meter().create_counter("signoff_approval_attempts", "Approval attempts by outcome", "attempts").add(
            1, {"gate": self.spec.name, "channel": attempt.channel, "decision": attempt.decision, "outcome": outcome}
        )

    @staticmethod
    def _evidence(attempt: ApprovalAttempt, snap: DirectorySnapshot, auth: AuthResult | None) -> dict[str, object]:
        evidence: dict[str, object] = {"directory_sha256": snap.sha256, "digest_seen": attempt.digest, "channel": attempt.channel}
        if auth is not None:
            # The person's signature (or the gateway's attestation) goes into the signed record,
            # so an auditor can check who approved which digest without trusting our key alone.
            evidence.update({"principal": auth.principal, "method": auth.method, "proof": attempt.proof.model_dump(mode="json") if attempt.proof else None})
        return evidence

    async def _apply(self, attempt: ApprovalAttempt, snap: DirectorySnapshot, *, auth: AuthResult | None) -> ApprovalResult:
        who = attempt.identity.lower()
        groups = snap.groups_of(who)
        self.eligible_now = self._eligible(snap)
        reason = judge_attempt(
            self.spec,
            self.status,
            attempt,
            person_groups=groups,
            person_known=who in snap.people,
            forbidden=self.forbidden,
            current_digest=self.current_digest(),
        )
        if reason is not None:
            return self._refuse(attempt, reason, snap, auth)
        self._count(attempt, "accepted")
        now = workflow.now()
        method = auth.method if auth is not None else ""
        record = ApprovalRecord(by=who, channel=attempt.channel, at=now, reason=attempt.reason, method=method)
        approved = {a.by for a in self.status.approvals}
        if attempt.decision == "approve":
            if who in approved:
                message = f"already approved by {who}; counted once"
            else:
                self.people_groups[who] = groups
                self.status.approvals.append(record)
                if attempt.proof is not None and auth is not None:
                    self.proofs[who] = attempt.proof
                    if not method.startswith("gateway:"):
                        self.signed.add(who)
                message = "approval recorded"
        elif attempt.decision == "revoke":
            self.status.approvals = [a for a in self.status.approvals if a.by != who]
            self.status.revocations.append(record)
            self.proofs.pop(who, None)
            self.signed.discard(who)
            message = "approval withdrawn"
        else:
            self.status.rejections.append(record)
            message = "rejection recorded"
            if self.spec.veto:
                self._close("rejected", now)
                message = f"gate {self.spec.name} rejected by {who}"
        if self.status.state == "open" and self._met() and (auth is None or await self._still_met()):
            self._close("approved", now)
        self.status.progress = progress_text(self.spec, self.status, self.people_groups)
        attempt_doc = attempt.model_dump(mode="json", exclude={"proof"})
        self.record(
            "approval_attempt",
            "accepted",
            [message] + ([attempt.reason] if attempt.reason else []),
            {"attempt": attempt_doc, **self._evidence(attempt, snap, auth)},
        )
        await self.notify(self.status, "closed" if self.status.state != "open" else "progress")
        return ApprovalResult(accepted=True, reason=f"{message}; {self.status.progress}", gate=self.status)

    def _met(self) -> bool:
        return quorum_met(
            {a.by: self.people_groups.get(a.by, set()) for a in self.status.approvals},
            required=self.spec.required,
            quotas=self.spec.quotas,
            signed=self.signed,
            min_signed=self.spec.min_signed,
        )

    async def _still_met(self) -> bool:
        """Before the gate closes: every counted approver, checked again against the directory
        and keys as they are now. Someone removed from the group, or whose key was revoked,
        since their approval no longer counts (recorded), and the gate stays open."""
        registry = Registry.from_snapshot(await self._load_trust())
        groups_allowed = eligible_groups(self.spec)
        for approval in list(self.status.approvals):
            who = approval.by
            proof = self.proofs.get(who)
            check = authenticate(proof, expect={"action": "approve", "subject": self.release_id(proof)}, registry=registry, now=None)
            groups = registry.directory.groups_of(who)
            why = None
            if not check.ok:
                why = check.reason
            elif who not in registry.directory.people:
                why = f"{who} is no longer in the approver directory"
            elif groups_allowed and not (groups & groups_allowed):
                why = f"{who} is no longer in the groups allowed to approve this gate ({', '.join(sorted(groups_allowed))})"
            if why is None:
                self.people_groups[who] = groups
                continue
            self.status.approvals = [a for a in self.status.approvals if a.by != who]
            self.proofs.pop(who, None)
            self.signed.discard(who)
            append_bounded(self.status, "refusals", RefusalRecord(by=who, channel=approval.channel, at=workflow.now(), decision="approve", reason=f"approval no longer counts: {why}"))
            self.record("approval_dropped", "dropped", [why], {"by": who, "gate": self.spec.name})
        return self._met()

    @staticmethod
    def release_id(proof: Proof | None) -> str | None:
        if proof is None:
            return None
        try:
            return str(request_of(proof).get("subject"))
        except ValueError:
            return None

    def _close(self, state: str, now: datetime) -> None:
        self.status.state = state  # type: ignore[assignment]
        self.status.closed_at = now

    async def wait(self) -> str:
        """Wait for the gate to close, sending reminders and escalating on durable timers."""
        assert self.status.opened_at is not None and self.status.deadline is not None
        opened = self.status.opened_at
        remind_at = opened + self.spec.remind_after if self.spec.remind_after else None
        escalate_after = self.spec.escalate_after or (self.spec.remind_after * 2 if self.spec.remind_after else None)
        escalate_at = opened + escalate_after if (self.spec.escalate_to and escalate_after) else None
        while self.status.state == "open" and not self.cancelled():
            now = workflow.now()
            upcoming = [t for t in (remind_at, escalate_at, self.status.deadline) if t is not None and t > now]
            if not upcoming:
                upcoming = [now]
            timeout = max(min(upcoming) - now, timedelta(milliseconds=1))
            try:
                await workflow.wait_condition(lambda: self.status.state != "open" or self.cancelled(), timeout=timeout)
            except TimeoutError:
                pass
            now = workflow.now()
            if self.status.state != "open" or self.cancelled():
                break
            if now >= self.status.deadline:
                self._close("expired", now)
                self.record("gate_outcome", "expired", [f"no quorum within {self.spec.timeout}"], {})
                await self.notify(self.status, "closed")
                break
            if escalate_at and now >= escalate_at and not self.status.escalated:
                self.status.escalated = True
                self.record("gate_escalated", "escalated", [f"still open after {escalate_after}"], {"to": self.spec.escalate_to})
                await self.notify(self.status, "escalation")
            if remind_at and now >= remind_at:
                self.status.reminders_sent += 1
                remind_at = now + (self.spec.remind_after or timedelta(hours=1))
                await self.notify(self.status, "reminder")
        if self.cancelled() and self.status.state == "open":
            self._close("closed", workflow.now())
            await self.notify(self.status, "closed")
        return self.status.state
