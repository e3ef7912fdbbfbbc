"""Advisor mode: `signoff release plan FILE` says what a release would go through, starts nothing.

The plan is a signed in-toto statement (predicate `https://signoff.dev/plan/v1`) about the
release file: the policy's tier, the gates and who could approve each, the denials, the canary
plan and the rollback target. Its `plan_sha256` is over the *decision core* (release file hash,
policy hash, tier, gates, denials), which the release computes again from what it really
decided and shows in its status, so an approver compares the two hashes instead of trusting
the agent's description. `plan_core` and `plan_sha256` are pure (the workflow calls them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from signoff.gates import eligible_groups
from signoff.models import DirectorySnapshot, PolicyDecision, ReleaseFile
from signoff.trust.dsse import canonical_json, envelope_signed_by, sign_envelope, unb64
from signoff.trust.evidence import forbidden_approvers, spec_sha256
from signoff.trust.proofs import body_digest

PLAN_PREDICATE = "https://signoff.dev/plan/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"


def plan_core(spec: ReleaseFile, decision: PolicyDecision) -> dict[str, Any]:
    """What must be the same for a release to be "the release that was planned"."""
    return {
        "service": spec.service,
        "environment": spec.environment,
        "release_file_sha256": spec_sha256(spec),
        "policy_sha256": decision.policy_sha256,
        "tier": decision.tier,
        "gates": [g.model_dump(mode="json") for g in decision.gates],
        "denials": sorted(decision.denials),
    }


def plan_sha256(spec: ReleaseFile, decision: PolicyDecision) -> str:
    return body_digest(plan_core(spec, decision))


def approvers(spec: ReleaseFile, decision: PolicyDecision, directory: DirectorySnapshot, requester: str, authors: list[str] | None = None) -> dict[str, list[str]]:
    """For each gate, the people who could approve it (never the requester, co-requesters or authors)."""
    forbidden = forbidden_approvers(requester, spec, authors)
    out: dict[str, list[str]] = {}
    for gate in decision.gates:
        groups = eligible_groups(gate)
        people = directory.people.keys() if not groups else {m for g in groups for m in directory.groups.get(g, [])}
        out[gate.name] = sorted(p for p in people if p.lower() not in forbidden)
    return out


def canary_plan(spec: ReleaseFile) -> list[str]:
    """The canary as steps a person reads ("weight 20%", "pause until someone promotes", …)."""
    if spec.canary is None or not spec.canary.steps:
        return ["deploy at 100% at once (no canary)"]
    steps: list[str] = []
    for step in spec.canary.steps:
        if step.set_weight is not None:
            steps.append(f"weight {step.set_weight}%")
        elif step.pause is not None:
            steps.append(f"pause {step.pause.duration}" if step.pause.duration else "pause until someone promotes")
        else:
            steps.append(f"analysis {', '.join(step.analysis or [])}")
    return steps + ["weight 100%"]


def statement(predicate: dict[str, Any], spec: ReleaseFile) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"release-file:{spec.service}", "digest": {"sha256": spec_sha256(spec).split(":", 1)[1]}}],
        "predicateType": PLAN_PREDICATE,
        "predicate": predicate,
    }


def sign_statement(doc: dict[str, Any], key: Any) -> dict[str, Any]:
    return sign_envelope(IN_TOTO_PAYLOAD, canonical_json(doc), key)


def verify_statement(envelope: dict[str, Any], registry: Any) -> dict[str, Any]:
    """The plan statement, once its signature verifies with a key the registry holds for the
    principal it names; raises ValueError saying what is wrong otherwise."""
    import json

    try:
        doc = json.loads(unb64(str(envelope["payload"])))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"the plan envelope has no readable payload ({e})") from e
    if envelope.get("payloadType") != IN_TOTO_PAYLOAD or doc.get("predicateType") != PLAN_PREDICATE:
        raise ValueError("this is not a signoff plan statement (predicate https://signoff.dev/plan/v1)")
    kind, _, ident = str(doc["predicate"].get("planned_by", "")).partition(":")
    if envelope_signed_by(envelope, registry.keys_of(kind, ident)) is None:
        raise ValueError(f"the plan's signature does not verify with any key registered for {kind} {ident}")
    return doc


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
