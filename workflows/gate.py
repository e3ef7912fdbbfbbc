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
    from signoff.models import (
        ApprovalAttempt,
        ApprovalRecord,
        ApprovalResult,
        DirectorySnapshot,
        GateSpec,
        GateStatus,
        RefusalRecord,
    )

# --------------------------------------------------------------------------- pure rules


def eligible_groups(spec: GateSpec) -> set[str]:
    """Groups whose members may act on the gate (empty = anyone in the directory)."""
    return set(spec.from_groups) | set(spec.quotas)


def quorum_met(approvers: dict[str, set[str]], *, required: int, quotas: dict[str, int]) -> bool:
    """True when `approvers` (identity → groups) satisfy the gate.

    Each identity counts once in total and fills at most one quota slot, so one person in both
    `sre` and `release-managers` cannot satisfy `{sre: 1, release-managers: 1}` alone
    (separation of duties). Quotas are checked by bipartite matching of people to slots.
    """
    if len(approvers) < required:
        return False
    slots = [g for g, n in sorted(quotas.items()) for _ in range(n)]
    if not slots:
        return True
    if len(approvers) < len(slots):
        return False
    owner: dict[int, str] = {}

    def assign(person: str, seen: set[int]) -> bool:
        for i, group in enumerate(slots):
            if group in approvers[person] and i not in seen:
                seen.add(i)
                if i not in owner or assign(owner[i], seen):
                    owner[i] = person
                    return True
        return False

    for person in sorted(approvers):
        assign(person, set())
    return len(owner) == len(slots)


def judge_attempt(
    spec: GateSpec,
    state: GateStatus,
    attempt: ApprovalAttempt,
    *,
    person_groups: set[str],
    person_known: bool,
    forbidden: set[str],
    current_digest: str | None,
) -> str | None:
    """Why the attempt is refused, or None when it may be applied."""
    who = attempt.identity.lower()
    if state.state != "open":
        return f"gate {spec.name} is {state.state}; it no longer takes decisions"
    if attempt.channel not in spec.channels and not (attempt.channel == "api" and "cli" in spec.channels):
        return f"gate {spec.name} does not accept the {attempt.channel} channel (allowed: {', '.join(spec.channels)})"
    if who in forbidden:
        return "the requester (or the person the agent acts for) cannot approve their own release"
    if attempt.digest and current_digest and attempt.digest != current_digest:
        return (
            f"you reviewed artifact {attempt.digest[:19]}…, but the release now ships {current_digest[:19]}…; "
            "review the current artifact and decide again"
        )
    groups = eligible_groups(spec)
    if not person_known:
        return f"{who} is not in the approver directory"
    if groups and not (person_groups & groups):
        return f"{who} is not in the groups allowed to approve this gate ({', '.join(sorted(groups))})"
    approved = {a.by for a in state.approvals}
    if attempt.decision == "revoke" and who not in approved:
        return f"{who} has no approval on gate {spec.name} to revoke"
    if attempt.decision == "approve" and who in approved:
        return None  # idempotent: counted once, reported as accepted
    return None


def progress_text(spec: GateSpec, state: GateStatus, people_groups: dict[str, set[str]]) -> str:
    names = ", ".join(a.by for a in state.approvals)
    text = f"{len(state.approvals)} of {spec.required}" + (f": {names}" if names else "")
    if spec.quotas:
        counts = []
        for group, need in sorted(spec.quotas.items()):
            have = sum(1 for a in state.approvals if group in people_groups.get(a.by, set()))
            counts.append(f"{group} {min(have, need)}/{need}")
        text += f" ({', '.join(counts)})"
    return text


def merge_gates(from_file: list[GateSpec], from_policy: list[GateSpec]) -> list[GateSpec]:
    """Policy gates replace or tighten the release file's; a release file can never loosen them.

    Same-named gates combine to the stricter of each setting; gates only one side names are kept.
    """
    merged: dict[str, GateSpec] = {g.name: g for g in from_file}
    for p in from_policy:
        f = merged.get(p.name)
        if f is None:
            merged[p.name] = p
            continue
        quotas = {g: max(f.quotas.get(g, 0), p.quotas.get(g, 0)) for g in set(f.quotas) | set(p.quotas)}
        if p.from_groups and f.from_groups:
            groups = [g for g in f.from_groups if g in p.from_groups] or list(p.from_groups)
        else:
            groups = list(p.from_groups or f.from_groups)
        merged[p.name] = GateSpec(
            name=p.name,
            required=max(f.required, p.required, sum(quotas.values())),
            from_groups=groups,
            quotas=quotas,
            timeout=min(f.timeout, p.timeout),
            remind_after=_min_td(f.remind_after, p.remind_after),
            escalate_to=p.escalate_to or f.escalate_to,
            escalate_after=_min_td(f.escalate_after, p.escalate_after),
            veto=f.veto or p.veto,
            channels=[c for c in f.channels if c in p.channels] or list(p.channels),
        )
    return list(merged.values())


def _min_td(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


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
    people_groups: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def create(cls, spec: GateSpec, **kwargs: object) -> "ApprovalGate":
        status = GateStatus(
            name=spec.name,
            state="pending",
            required=spec.required,
            quotas=dict(spec.quotas),
            from_groups=list(spec.from_groups),
            channels=list(spec.channels),
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
        if last is not None and seen_sha256 is not None and seen_sha256 == last.sha256 and workflow.patched("reuse-directory-snapshot"):
            return last  # patched: histories from before this change re-read on every attempt
        self.last_snapshot = await self._snapshot()
        return self.last_snapshot

    async def open(self) -> None:
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
        snap = await self._current_snapshot(attempt.directory_sha256)
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
        now = workflow.now()
        evidence = {"directory_sha256": snap.sha256, "digest_seen": attempt.digest, "channel": attempt.channel}
        workflow.metric_meter().create_counter("signoff_approval_attempts", "Approval attempts by outcome", "attempts").add(
            1, {"gate": self.spec.name, "channel": attempt.channel, "decision": attempt.decision, "outcome": "refused" if reason else "accepted"}
        )
        if reason is not None:
            self.status.refusals.append(
                RefusalRecord(by=who, channel=attempt.channel, at=now, decision=attempt.decision, reason=reason)
            )
            self.record("approval_attempt", "refused", [reason], {"attempt": attempt.model_dump(mode="json"), **evidence})
            return ApprovalResult(accepted=False, reason=reason, gate=self.status)

        record = ApprovalRecord(by=who, channel=attempt.channel, at=now, reason=attempt.reason)
        approved = {a.by for a in self.status.approvals}
        if attempt.decision == "approve":
            if who in approved:
                message = f"already approved by {who}; counted once"
            else:
                self.people_groups[who] = groups
                self.status.approvals.append(record)
                message = "approval recorded"
        elif attempt.decision == "revoke":
            self.status.approvals = [a for a in self.status.approvals if a.by != who]
            self.status.revocations.append(record)
            message = "approval withdrawn"
        else:
            self.status.rejections.append(record)
            message = "rejection recorded"
            if self.spec.veto:
                self._close("rejected", now)
                message = f"gate {self.spec.name} rejected by {who}"
        if self.status.state == "open" and quorum_met(
            {a.by: self.people_groups.get(a.by, set()) for a in self.status.approvals},
            required=self.spec.required,
            quotas=self.spec.quotas,
        ):
            self._close("approved", now)
        self.status.progress = progress_text(self.spec, self.status, self.people_groups)
        self.record(
            "approval_attempt",
            "accepted",
            [message] + ([attempt.reason] if attempt.reason else []),
            {"attempt": attempt.model_dump(mode="json"), **evidence},
        )
        await self.notify(self.status, "closed" if self.status.state != "open" else "progress")
        return ApprovalResult(accepted=True, reason=f"{message}; {self.status.progress}", gate=self.status)

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
