"""The gate's pure rules: who may approve, when quorum is met, how policy tightens gates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.models import ApprovalAttempt, ApprovalRecord, GateSpec, GateStatus
from workflows.gate import judge_attempt, merge_gates, quorum_met

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def attempt(who: str, decision: str = "approve", channel: str = "cli", digest: str | None = DIGEST) -> ApprovalAttempt:
    return ApprovalAttempt(release_id="r", gate="production", identity=who, channel=channel, decision=decision, digest=digest)  # type: ignore[arg-type]


def judge(spec: GateSpec, a: ApprovalAttempt, groups: set[str], *, state: GateStatus | None = None, known: bool = True) -> str | None:
    return judge_attempt(
        spec,
        state or GateStatus(name=spec.name, state="open"),
        a,
        person_groups=groups,
        person_known=known,
        forbidden={"dana@example.com"},
        current_digest=DIGEST,
    )


SPEC = GateSpec(name="production", required=2, from_groups=["release-managers"], channels=["slack", "jira", "cli"])


def test_member_may_approve() -> None:
    assert judge(SPEC, attempt("alice@example.com"), {"release-managers"}) is None


def test_requester_is_refused_even_if_member() -> None:
    reason = judge(SPEC, attempt("dana@example.com"), {"release-managers"})
    assert reason is not None and "requester" in reason


def test_non_member_is_refused() -> None:
    reason = judge(SPEC, attempt("carol@example.com"), {"sre"})
    assert reason is not None and "not in the groups" in reason


def test_unknown_person_is_refused() -> None:
    reason = judge(SPEC, attempt("mallory@example.com"), set(), known=False)
    assert reason is not None and "not in the approver directory" in reason


def test_channel_not_allowed() -> None:
    spec = SPEC.model_copy(update={"channels": ["slack"]})
    reason = judge(spec, attempt("alice@example.com", channel="jira"), {"release-managers"})
    assert reason is not None and "does not accept the jira channel" in reason


def test_digest_mismatch_is_refused() -> None:
    reason = judge(SPEC, attempt("alice@example.com", digest=OTHER), {"release-managers"})
    assert reason is not None and "review the current artifact" in reason


def test_closed_gate_refuses() -> None:
    reason = judge(SPEC, attempt("alice@example.com"), {"release-managers"}, state=GateStatus(name="production", state="approved"))
    assert reason is not None and "no longer takes decisions" in reason


def test_revoke_without_approval_is_refused() -> None:
    reason = judge(SPEC, attempt("alice@example.com", decision="revoke"), {"release-managers"})
    assert reason is not None and "to revoke" in reason


def test_revoke_with_approval_is_allowed() -> None:
    state = GateStatus(name="production", state="open", approvals=[ApprovalRecord(by="alice@example.com", channel="cli", at=NOW)])
    assert judge(SPEC, attempt("alice@example.com", decision="revoke"), {"release-managers"}, state=state) is None


def test_quorum_counts_distinct_people() -> None:
    assert not quorum_met({"alice@example.com": {"rm"}}, required=2, quotas={})
    assert quorum_met({"alice@example.com": {"rm"}, "bob@example.com": {"rm"}}, required=2, quotas={})


def test_quota_needs_each_group() -> None:
    two_rms = {"alice@example.com": {"release-managers"}, "bob@example.com": {"release-managers"}}
    assert not quorum_met(two_rms, required=2, quotas={"sre": 1, "release-managers": 1})
    with_sre = {"alice@example.com": {"release-managers"}, "carol@example.com": {"sre"}}
    assert quorum_met(with_sre, required=2, quotas={"sre": 1, "release-managers": 1})


def test_one_person_never_fills_two_quota_slots() -> None:
    both = {"carol@example.com": {"sre", "release-managers"}}
    assert not quorum_met(both, required=1, quotas={"sre": 1, "release-managers": 1})
    plus = {"carol@example.com": {"sre", "release-managers"}, "alice@example.com": {"release-managers"}}
    assert quorum_met(plus, required=2, quotas={"sre": 1, "release-managers": 1})


def test_policy_tightens_and_file_cannot_loosen() -> None:
    from_file = [GateSpec(name="production", required=1, timeout=timedelta(hours=48), channels=["slack", "cli", "jira"])]
    from_policy = [GateSpec(name="production", required=2, quotas={"sre": 1}, timeout=timedelta(hours=24), channels=["slack", "jira"])]
    (merged,) = merge_gates(from_file, from_policy)
    assert merged.required == 2
    assert merged.quotas == {"sre": 1}
    assert merged.timeout == timedelta(hours=24)
    assert merged.channels == ["slack", "jira"]
    # a release file asking for more keeps its stricter setting
    (stricter,) = merge_gates([GateSpec(name="production", required=3)], from_policy)
    assert stricter.required == 3


# ----------------------------------------------------------------------------- property

PEOPLE = {
    "alice@example.com": {"release-managers"},
    "bob@example.com": {"release-managers"},
    "carol@example.com": {"sre"},
    "erin@example.com": {"sre", "release-managers"},
}


def brute_force(approvers: dict[str, set[str]], required: int, quotas: dict[str, int]) -> bool:
    """Reference: some assignment of distinct people to quota slots exists."""
    if len(approvers) < required:
        return False
    slots = [g for g, n in quotas.items() for _ in range(n)]
    people = list(approvers)
    if len(slots) > len(people):
        return False
    from itertools import permutations

    for chosen in combinations(people, len(slots)):
        for order in permutations(chosen):
            if all(slot in approvers[p] for slot, p in zip(slots, order)):
                return True
    return not slots


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(sorted(PEOPLE)), st.sampled_from(["approve", "revoke"])), max_size=12),
    st.integers(min_value=1, max_value=3),
    st.dictionaries(st.sampled_from(["sre", "release-managers"]), st.integers(min_value=0, max_value=2)),
)
def test_gate_opens_exactly_when_quota_rules_say(events: list[tuple[str, str]], required: int, quotas: dict[str, int]) -> None:
    """Replaying random attempts: the approval set never holds anyone twice, and quorum is
    reported exactly when a brute-force assignment of people to quota slots exists."""
    spec = GateSpec(name="production", required=required, quotas=quotas, from_groups=["sre", "release-managers"])
    state = GateStatus(name="production", state="open")
    for who, decision in events:
        if state.state != "open":
            break
        reason = judge(spec, attempt(who, decision=decision), PEOPLE[who], state=state)
        if reason is not None:
            assert decision == "revoke" and who not in {a.by for a in state.approvals}
            continue
        if decision == "approve" and who not in {a.by for a in state.approvals}:
            state.approvals.append(ApprovalRecord(by=who, channel="cli", at=NOW))
        elif decision == "revoke":
            state.approvals = [a for a in state.approvals if a.by != who]
        ids = [a.by for a in state.approvals]
        assert len(ids) == len(set(ids))
        current = {a.by: PEOPLE[a.by] for a in state.approvals}
        met = quorum_met(current, required=spec.required, quotas=spec.quotas)
        assert met == brute_force(current, spec.required, spec.quotas)
        if met:
            state.state = "approved"
