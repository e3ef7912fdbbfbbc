"""The rules of who may start a release, and the actuator's evidence check.

`judge_start` is the same decision in the workflow (refuse a contradictory start) and in the
deploy activity (re-derive the requester from the signed start). `check_evidence` is what the
deploy activity runs before any weight > 0: the signed start, the worker's policy on the recorded
facts, and signed approvals meeting every gate for exactly this digest. A forged Update, a
hijacked workflow or a rogue workflow on the task queue gets nothing shipped past it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable

from signoff.errors import Refused
from signoff.gates import eligible_groups, merge_gates, quorum_met
from signoff.models import AgentEntry, ChangeFacts, Evidence, PolicyDecision, ReleaseFile, StartRunbook
from signoff.policy_input import build_policy_input
from signoff.trust.proofs import body_digest
from signoff.trust.registry import Registry
from signoff.trust.verify import ProofRefused, verify_proof


class EvidenceRefused(Refused):
    """The evidence does not allow shipping this digest."""


#: spec_sha256's results by the SHA-256 of the spec's JSON, oldest dropped first: a release
#: recomputes its spec digest each time its workflow is rebuilt from history (a cache miss), and
#: with 10,000 releases waiting that was 2 % of the worker. 20,000 entries are ~3 MiB.
_SPEC_DIGESTS: "OrderedDict[bytes, str]" = OrderedDict()
_SPEC_DIGESTS_MAX = 20_000


def spec_sha256(spec: ReleaseFile) -> str:
    """The digest a start proof signs: over the spec as the workflow will see it (validated again,
    so a model built with model_copy(update=…) hashes like the same spec read from a file)."""
    raw = spec.model_dump_json()
    key = hashlib.sha256(raw.encode()).digest()
    digest = _SPEC_DIGESTS.get(key)
    if digest is None:
        digest = body_digest(ReleaseFile.model_validate(json.loads(raw)).model_dump(mode="json"))
        _SPEC_DIGESTS[key] = digest
        if len(_SPEC_DIGESTS) > _SPEC_DIGESTS_MAX:
            _SPEC_DIGESTS.popitem(last=False)
    return digest


def plan_sha256(spec: ReleaseFile, digest: str | None) -> str:
    """The plan hash an approval binds: the whole evaluated release spec (build and test
    commands, deploy target with its commands and settings, canary plan, gates) plus the artifact
    digest. Any change to either is another plan, and needs approving again."""
    return body_digest({"spec_sha256": spec_sha256(spec), "artifact": digest})


def start_body(spec: ReleaseFile, checkout: str | None) -> dict[str, Any]:
    """What a start proof signs about the release: the spec, and the checkout it is built from
    (a captured proof cannot start the same release from someone else's source tree)."""
    return {"spec_sha256": spec_sha256(spec), "checkout": checkout}


def start_expectations(release_id: str, spec: ReleaseFile, checkout: str | None) -> dict[str, Any]:
    return {"action": "start_release", "subject": release_id, "body": start_body(spec, checkout)}


def run_expectations(args: StartRunbook) -> dict[str, Any]:
    """What a runbook run's proof must have signed: this run of this runbook with these parameters."""
    return {
        "action": "runbook_run",
        "subject": args.run_id,
        "body": {"runbook": args.runbook, "params_sha256": body_digest(args.params), "dry_run": args.dry_run},
    }


def judge_start(kind: str, ident: str, agent: AgentEntry | None, spec: ReleaseFile) -> tuple[str, str | None]:
    """(requester, None) when the authenticated starter may ask for this release, else (.., why not).

    The requester is never what the file claims: it is the person who signed, or the owner the
    registry gives for the agent that signed. A file that says otherwise is refused.
    """
    if kind == "agent":
        if agent is None:
            return "", f"agent {ident} is not in the agent registry"
        if spec.agent is None:
            return agent.owner, f"agent {ident} signed the start but the release file has no agent block; an agent's release names the agent"
        if spec.agent.id != ident:
            return agent.owner, f"the release file says agent {spec.agent.id} asks, but the start was signed by agent {ident}"
        if spec.requested_by != agent.owner:
            return agent.owner, (
                f"the release file says it is requested by {spec.requested_by}, but agent {ident} acts for {agent.owner} "
                "(agent registry); requested_by must be the agent's owner"
            )
        if "*" not in agent.services and spec.service not in agent.services:
            return agent.owner, f"agent {ident} may not release {spec.service} (allowed: {', '.join(agent.services) or 'none'})"
        if "*" not in agent.environments and spec.environment not in agent.environments:
            return agent.owner, f"agent {ident} may not release to {spec.environment} (allowed: {', '.join(agent.environments) or 'none'})"
        return agent.owner, None
    if kind == "person":
        if spec.agent is not None:
            return ident, f"the release file names agent {spec.agent.id}, but the start was signed by {ident}; an agent signs its own requests"
        if spec.requested_by != ident.lower():
            return ident, f"the release file says it is requested by {spec.requested_by}, but the start was signed by {ident}; people ask only for themselves"
        return ident.lower(), None
    return "", f"a {kind} cannot start releases"


def forbidden_approvers(requester: str, spec: ReleaseFile, authors: list[str] | None = None) -> set[str]:
    """Who can never approve: the requester (the agent's owner), co-requesters, commit authors."""
    return {requester.lower(), spec.requested_by.lower(), *(p.lower() for p in spec.change.co_requested_by), *(a.lower() for a in authors or [])}


def check_evidence(
    evidence: Evidence,
    *,
    digest: str,
    registry: Registry,
    decide: Callable[[dict[str, Any]], PolicyDecision],
    now: datetime | None = None,
    sandbox: dict[str, str] | None = None,
    change: ChangeFacts | None = None,
) -> str:
    """None-raising when shipping `digest` is allowed; returns a one-line summary for the log."""
    spec = evidence.spec
    try:
        start = verify_proof(evidence.start_proof, expect=start_expectations(evidence.release_id, spec, evidence.base_dir), registry=registry, now=None)
    except ProofRefused as e:
        raise EvidenceRefused(f"refused to ship {digest[:19]}…: the release's start proof does not verify ({e})") from e
    requester, why = judge_start(start.kind, start.id, start.agent, spec)
    if why:
        raise EvidenceRefused(f"refused to ship {digest[:19]}…: {why}")
    facts = build_policy_input(
        spec,
        digest=digest,
        tests=evidence.tests,
        provenance=evidence.provenance,
        now=now or datetime.now(timezone.utc),
        sandbox=sandbox,
        change=change,
        scans=evidence.scans,
        sbom=evidence.sbom,
    )
    decision = decide(facts)
    if decision.denials:
        raise EvidenceRefused(f"refused to ship {digest[:19]}…: the worker's policy denies it ({'; '.join(decision.denials)})")
    gates = merge_gates(spec.gates, decision.gates)
    forbidden = forbidden_approvers(requester, spec, change.authors if change else None)
    seen_nonces: set[str] = set()
    per_gate: dict[str, dict[str, set[str]]] = {g.name: {} for g in gates}
    signed: dict[str, set[str]] = {g.name: set() for g in gates}
    problems: list[str] = []
    for item in evidence.approvals:
        try:
            proven = verify_proof(
                item.proof,
                expect={"action": "approve", "subject": evidence.release_id, "digest": digest},
                registry=registry,
                now=None,
            )
        except ProofRefused as e:
            problems.append(f"an approval by {item.identity} does not verify ({e})")
            continue
        if evidence.plan_sha256 is not None and proven.request.get("plan") != plan_sha256(spec, digest):
            problems.append(f"an approval by {proven.identity} was given for plan {str(proven.request.get('plan'))[:19]}…, not the plan being shipped")
            continue
        gate = next((g for g in gates if g.name == item.gate), None)
        if gate is None or proven.request.get("gate") not in (None, item.gate):
            problems.append(f"an approval by {proven.identity} is for another gate")
            continue
        if proven.nonce in seen_nonces:
            problems.append(f"an approval by {proven.identity} is given twice")
            continue
        seen_nonces.add(proven.nonce)
        who = proven.identity
        if proven.kind == "agent" or who in forbidden:
            problems.append(f"{who} cannot approve this release")
            continue
        if proven.channel not in gate.channels and not (proven.channel == "api" and "cli" in gate.channels):
            problems.append(f"gate {gate.name} does not take {proven.channel} approvals")
            continue
        groups = registry.directory.groups_of(who)
        allowed = eligible_groups(gate)
        if allowed and not (groups & allowed):
            problems.append(f"{who} is not in the groups of gate {gate.name}")
            continue
        per_gate[gate.name][who] = groups
        if not proven.method.startswith("gateway:"):
            signed[gate.name].add(who)
    for gate in gates:
        approvers = per_gate[gate.name]
        if not quorum_met(approvers, required=gate.required, quotas=gate.quotas, signed=signed[gate.name], min_signed=gate.min_signed):
            extra = f" ({'; '.join(problems[:3])})" if problems else ""
            raise EvidenceRefused(
                f"refused to ship {digest[:19]}…: gate {gate.name} has {len(approvers)} valid signed approval(s) for this digest "
                f"({', '.join(sorted(approvers)) or 'none'}), short of what it needs{extra}"
            )
    return f"evidence verified: start by {start.principal}, {sum(len(a) for a in per_gate.values())} signed approval(s), policy {decision.policy_sha256[:12]}"
