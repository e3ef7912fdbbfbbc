"""Pure approval-gate rules, with no Temporal in them: who may act, when a gate is met, and how
policy gates tighten a release file's. The workflow's gates (workflows/gate.py) and the deploy
actuator's evidence check (activities/deploy) apply the same rules.
"""

from __future__ import annotations

from datetime import timedelta

from signoff.models import ApprovalAttempt, GateSpec, GateStatus




def eligible_groups(spec: GateSpec) -> set[str]:
    """Groups whose members may act on the gate (empty = anyone in the directory)."""
    return set(spec.from_groups) | set(spec.quotas)


def quorum_met(
    approvers: dict[str, set[str]], *, required: int, quotas: dict[str, int], signed: set[str] | None = None, min_signed: int = 0
) -> bool:
    """True when `approvers` (identity → groups) satisfy the gate.

    Each identity counts once in total and fills at most one quota slot, so one person in both
    `sre` and `release-managers` cannot satisfy `{sre: 1, release-managers: 1}` alone
    (separation of duties). Quotas are checked by bipartite matching of people to slots.
    """
    if len(approvers) < required:
        return False
    if min_signed and len((signed or set()) & set(approvers)) < min_signed:
        return False  # chat clicks alone cannot meet a gate that needs personally signed approvals
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
        return f"{who} cannot approve this release: its requester, the person an agent acts for, co-requesters and the commit authors never approve their own change"
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
    if spec.min_signed:
        text += f", {spec.min_signed} signed by the person (CLI key or OIDC)"
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
            min_signed=max(f.min_signed, p.min_signed),
        )
    return list(merged.values())


def _min_td(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
