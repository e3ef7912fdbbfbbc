"""The trust boundary, attacked the way the review did: against the real dev server and worker.

Each test performs one attack from issue "Trust boundary" (a raw Temporal Update, a forged or
replayed proof, a file that names someone else, a stale directory snapshot, a rogue workflow
scheduling the deploy activity, …) and asserts both that it is refused, with a one-sentence
reason in the status and the signed log, and that nothing changed: no approval counted,
nothing shipped, the release still where it was.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from signoff.audit import export, public_key_from_settings, store_from_settings, verify_export
from signoff.config import Settings
from signoff.errors import Refused
from signoff.models import ApprovalAttempt, ApprovalResult, DeploymentState, DeployRequest, DeploySpec, Evidence, StartRelease, StartRunbook
from signoff.trust.credentials import Credential, dev_key_path
from signoff.trust.evidence import run_expectations, start_body
from signoff.trust.keys import write_private_key
from signoff.trust.proofs import new_request, sign_request
from signoff.trust.registry import TrustStore
from tests.helpers import DIGEST_A, DIGEST_B, attested, dev_directory, gated_spec, records, release_spec, running_worker, wait_phase, write_directory

pytestmark = pytest.mark.asyncio

ALICE, BOB, CAROL, DANA = "alice@example.com", "bob@example.com", "carol@example.com", "dana@example.com"


def rid(prefix: str = "rel-trust") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def dev_key(who: str, kind: str = "person") -> Path:
    return dev_key_path(Settings.from_env().state_dir, kind, who)


def signed(who: str, *, key: Path | None = None, kind: str = "person", **request: Any) -> Any:
    """A proof as `who` would make it (or as an attacker holding `key` would)."""
    from signoff.trust.keys import load_private_key

    request.setdefault("channel", "cli")
    return sign_request(new_request(principal=f"{kind}:{who}", **request), load_private_key(key or dev_key(who, kind)))


def approve_proof(release_id: str, who: str, *, digest: str = DIGEST_A, gate: str | None = None, **kw: Any) -> Any:
    return signed(who, action="approve", subject=release_id, gate=gate, digest=digest, body={"reason": ""}, **kw)


async def raw_approve(client: Client, attempt: ApprovalAttempt) -> ApprovalResult:
    """An attacker with a Temporal credential: the Update, straight to the server. An attempt
    that proves nobody is rejected by the Update's validator (never written to the history);
    one with a valid proof is judged and answered by the workflow."""
    try:
        return await client.get_workflow_handle(attempt.release_id).execute_update(
            "submit_approval", attempt, id=f"raw-{uuid.uuid4().hex}", result_type=ApprovalResult
        )
    except WorkflowUpdateFailedError as e:
        return ApprovalResult(accepted=False, reason=f"rejected before the history: {getattr(e.cause, 'message', e)}")


async def update_events(client: Client, release_id: str) -> int:
    """How many Updates the release's history admitted."""
    history = await client.get_workflow_handle(release_id).fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


async def gated_release(sc: Any, **gate: Any) -> str:
    r = rid()
    await sc.start_release(gated_spec(**gate), release_id=r)
    await wait_phase(sc, r, "awaiting_approval")
    return r


async def still_waiting(sc: Any, r: str) -> Any:
    status = await sc.status(r)
    assert status.phase.value == "awaiting_approval" and status.gates[0].state == "open"
    assert status.gates[0].approvals == []
    return status


# --------------------------------------------------------------------------- forged approvals


async def test_raw_update_as_slack_without_attestation_is_refused(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        for who in (CAROL, ALICE):
            result = await raw_approve(client, ApprovalAttempt(release_id=r, identity=who, channel="slack", digest=DIGEST_A))
            assert not result.accepted and "rejected before the history" in result.reason and "carries no proof" in result.reason
        status = await still_waiting(sc, r)
        # proving nobody, they leave no trace to fill the history with: not in status, not admitted
        assert status.gates[0].refusals == [] and await update_events(client, r) == 0


async def test_personal_key_cannot_speak_for_a_chat_channel(client: Client, task_queue: str) -> None:
    """Alice signs with her own key but claims the click came from Slack: only the gateway attests Slack."""
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        proof = approve_proof(r, ALICE, channel="slack")
        result = await raw_approve(client, ApprovalAttempt(release_id=r, identity=ALICE, channel="slack", digest=DIGEST_A, proof=proof))
        assert not result.accepted and "attested by the gateway only" in result.reason
        await still_waiting(sc, r)


async def test_forged_dsse_proof_signed_by_an_unregistered_key_is_refused(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        forged_key = tmp_path / "mallory.ed25519"
        write_private_key(forged_key, Ed25519PrivateKey.generate())
        proof = approve_proof(r, ALICE, key=forged_key)
        result = await raw_approve(client, ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A, proof=proof))
        assert not result.accepted and "does not verify with any key registered for person alice@example.com" in result.reason
        # A forged gateway attestation fares no better.
        fake_gateway = signed("gateway", kind="gateway", key=forged_key, action="approve", subject=r, digest=DIGEST_A, channel="slack", on_behalf_of=ALICE, body={"reason": ""})
        result = await raw_approve(client, ApprovalAttempt(release_id=r, identity=ALICE, channel="slack", digest=DIGEST_A, proof=fake_gateway))
        assert not result.accepted and "registered for gateway gateway" in result.reason
        await still_waiting(sc, r)


async def test_proof_speaks_only_for_its_signer(client: Client, task_queue: str) -> None:
    """Bob's valid proof handed in as carol's approval."""
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        result = await raw_approve(client, ApprovalAttempt(release_id=r, identity=CAROL, channel="cli", digest=DIGEST_A, proof=approve_proof(r, BOB)))
        assert not result.accepted
        await still_waiting(sc, r)


async def test_proof_replayed_for_another_release_gate_digest_or_decision_is_refused(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        r1, r2 = await gated_release(sc), await gated_release(sc)
        proof = approve_proof(r1, ALICE)
        cases = [
            (ApprovalAttempt(release_id=r2, identity=ALICE, channel="cli", digest=DIGEST_A, proof=proof), "subject"),
            (ApprovalAttempt(release_id=r1, identity=ALICE, channel="cli", digest=DIGEST_A, gate="production", proof=proof), "gate"),
            (ApprovalAttempt(release_id=r1, identity=ALICE, channel="cli", digest=DIGEST_B, proof=proof), "digest"),
            (ApprovalAttempt(release_id=r1, identity=ALICE, channel="cli", digest=DIGEST_A, decision="reject", reason="x", proof=proof), "action"),
        ]
        for attempt, field in cases:
            result = await raw_approve(client, attempt)
            assert not result.accepted and f"the proof was made for {field}" in result.reason, result.reason
        await still_waiting(sc, r1)
        await still_waiting(sc, r2)


async def test_used_proof_replayed_after_a_revoke_is_refused_and_a_fresh_approval_counts(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        plan = (await sc.status(r)).plan_sha256
        proof = approve_proof(r, ALICE, plan=plan)
        first = await raw_approve(client, ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A, plan=plan, proof=proof))
        assert first.accepted
        revoked = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", decision="revoke"))
        assert revoked.accepted and revoked.gate is not None and revoked.gate.approvals == []
        replay = await raw_approve(client, ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A, plan=plan, proof=proof))
        assert not replay.accepted and "already used once" in replay.reason
        again = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))
        assert again.accepted and [a.by for a in again.gate.approvals] == [ALICE]  # re-approving after a revoke counts


async def test_expired_proof_is_refused(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        old = datetime.now(timezone.utc) - timedelta(minutes=20)
        proof = approve_proof(r, ALICE, now=old)
        result = await raw_approve(client, ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A, proof=proof))
        assert not result.accepted and "expired" in result.reason
        await still_waiting(sc, r)


async def test_caller_directory_hash_cannot_keep_a_removed_approver(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = dev_directory(tmp_path, monkeypatch)
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        old_hash = (await sc.status(r)).gates[0].directory_sha256
        doc = yaml.safe_load(directory.read_text())
        doc["groups"]["release-managers"] = [ALICE]
        directory.write_text(yaml.safe_dump(doc))
        attempt = ApprovalAttempt(release_id=r, identity=BOB, channel="cli", digest=DIGEST_A, directory_sha256=old_hash)
        await sc.submit_approval(attempt)  # within the gate's refresh interval it may count for now…
        closing = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))
        # …but the approval that would close the gate re-reads the directory: bob no longer counts
        assert closing.accepted and closing.gate is not None and closing.gate.state == "open"
        status = await sc.status(r)
        assert [a.by for a in status.gates[0].approvals] == [ALICE] and status.phase.value == "awaiting_approval"
        assert any(x.by == BOB and "approval no longer counts" in x.reason and "no longer in the groups" in x.reason for x in status.gates[0].refusals)
        assert await records(r, kind="approval_dropped", outcome="dropped")


# --------------------------------------------------------------------------- who asks


async def test_requester_named_in_the_file_must_be_the_signer(client: Client, task_queue: str) -> None:
    """Alice writes a release 'requested by bob' and would then approve it herself."""
    async with running_worker(client, task_queue) as sc:
        sc.credentials = lambda kind, ident: Credential(f"person:{ALICE}", "alice's key", key_path=dev_key(ALICE))
        spec = gated_spec().model_copy(update={"requested_by": BOB})
        r = rid()
        with pytest.raises(Refused, match="requested by bob@example.com, but the start was signed by alice@example.com"):
            await sc.start_release(spec, release_id=r)
        status = await sc.status(r)
        assert status.phase.value == "denied" and status.artifact_digest == DIGEST_A and not status.gates
        assert (await records(r, kind="start", outcome="refused"))


async def test_agent_block_cannot_name_another_human(client: Client, task_queue: str) -> None:
    """The registry says release-bot acts for dana; a file saying it acts for alice is refused."""
    async with running_worker(client, task_queue) as sc:
        spec = release_spec(agent={"id": "release-bot"}, requested_by=ALICE)
        with pytest.raises(Refused, match="acts for dana@example.com"):
            await sc.start_release(spec, release_id=rid())
        # …and a person cannot pose as the agent by writing its block into their own file.
        sc.credentials = lambda kind, ident: Credential(f"person:{DANA}", "dana's key", key_path=dev_key(DANA))
        with pytest.raises(Refused, match="an agent signs its own requests"):
            await sc.start_release(release_spec(agent={"id": "release-bot"}), release_id=rid())


async def test_unknown_and_suspended_agents_cannot_start(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ghost_key = tmp_path / "ghost.ed25519"
    write_private_key(ghost_key, Ed25519PrivateKey.generate())
    registry = yaml.safe_load(Path(Settings.from_env().agents_path).read_text())
    registry["agents"][0]["status"] = "suspended"
    suspended = tmp_path / "agents.yaml"
    suspended.write_text(yaml.safe_dump(registry))
    async with running_worker(client, task_queue) as sc:
        sc.credentials = lambda kind, ident: Credential(f"agent:{ident}", "ghost", key_path=ghost_key)
        with pytest.raises(Refused, match="agent ghost-bot is not in the agent registry"):
            await sc.start_release(release_spec(agent={"id": "ghost-bot"}), release_id=rid())
    monkeypatch.setenv("SIGNOFF_AGENTS", str(suspended))
    async with running_worker(client, task_queue + "-s") as sc:
        with pytest.raises(Refused, match="agent release-bot is suspended"):
            await sc.start_release(release_spec(agent={"id": "release-bot"}), release_id=rid())


async def test_unsigned_start_is_denied_before_anything_runs(client: Client, task_queue: str) -> None:
    async with running_worker(client, task_queue) as sc:
        r = rid()
        await client.start_workflow(
            "ReleaseWorkflow", StartRelease(release_id=r, spec=release_spec(), base_dir="/tmp"), id=r, task_queue=task_queue
        )
        status = await wait_phase(sc, r, "denied")
        assert "carries no proof" in (status.reason or "") and status.canary is None
        assert [x.decision for x in status.refusals] == ["start"]


async def test_caller_chosen_policy_and_directory_are_ignored(client: Client, task_queue: str, tmp_path: Path) -> None:
    """A permissive policy dir and directory in the workflow input: the worker's policy decides."""
    permissive = tmp_path / "policies"
    permissive.mkdir()
    (permissive / "release.rego").write_text(
        'package signoff.release\nimport rego.v1\ndecision := {"tier": "low", "gates": [], "denials": [], "reasons": ["anything goes"], "on_inconclusive": "rollback", "allow": true}\n'
    )
    evil_directory = tmp_path / "approvers.yaml"
    evil_directory.write_text(yaml.safe_dump({"people": [{"email": "mallory@evil.invalid"}], "groups": {"sre": ["mallory@evil.invalid"]}}))
    async with running_worker(client, task_queue) as sc:
        r = rid()
        spec = release_spec(agent={"id": "release-bot"}, change={"summary": "agent edits auth", "paths": ["auth/login.py"]})
        proof = signed("release-bot", kind="agent", action="start_release", subject=r, body=start_body(spec, str(tmp_path)), channel="api")
        args = StartRelease(release_id=r, spec=spec, base_dir=str(tmp_path), policy_dir=str(permissive), directory_path=str(evil_directory), proof=proof)
        await client.start_workflow("ReleaseWorkflow", args, id=r, task_queue=task_queue)
        status = await wait_phase(sc, r, "awaiting_approval")
        assert status.tier == "high" and status.gates[0].required == 2 and "sre" in status.gates[0].quotas
        assert "mallory@evil.invalid" not in status.gates[0].from_groups
        outsider_key = tmp_path / "mallory.ed25519"
        write_private_key(outsider_key, Ed25519PrivateKey.generate())
        attempt = ApprovalAttempt(release_id=r, identity="mallory@evil.invalid", channel="cli", digest=DIGEST_A, proof=approve_proof(r, "mallory@evil.invalid", key=outsider_key))
        result = await raw_approve(client, attempt)
        assert not result.accepted and "not in the approver directory" in result.reason


# --------------------------------------------------------------------------- promote, abort, runbooks


async def test_promote_and_abort_need_an_authenticated_permitted_person(client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = yaml.safe_load((Settings.from_env().state_dir / "dev" / "approvers.yaml").read_text())
    doc["people"].append({"email": "erin@example.com", "name": "Erin"})
    doc["groups"]["developers"].append("erin@example.com")
    monkeypatch.setenv("SIGNOFF_DIRECTORY", str(write_directory(tmp_path / "approvers.yaml", doc)))
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        handle = client.get_workflow_handle(r)
        with pytest.raises(WorkflowUpdateFailedError) as raw:
            await handle.execute_update("promote", {"identity": "mallory@evil.invalid", "channel": "cli"}, result_type=dict)
        assert "carries no proof" in str(raw.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("abort", {"identity": CAROL, "channel": "cli", "reason": "forged"}, result_type=dict)
        with pytest.raises(Refused, match="erin@example.com may not abort this release"):
            await sc.abort(r, identity="erin@example.com", reason="not mine")
        with pytest.raises(Refused, match="not in the groups that may promote"):
            await sc.promote(r, identity="erin@example.com")
        status = await sc.status(r)
        assert status.phase.value == "awaiting_approval"
        assert [(x.by, x.decision) for x in status.refusals] == [
            ("mallory@evil.invalid", "promote"),
            (CAROL, "abort"),
            ("erin@example.com", "abort"),
            ("erin@example.com", "promote"),
        ]
        assert len(await records(r, kind="promote", outcome="refused", count=2)) == 2
        done = await sc.abort(r, identity=CAROL, reason="on-call stops it")  # on-call, signed: allowed
        assert done["accepted"]
        await wait_phase(sc, r, "aborted")


async def test_captured_start_proof_cannot_start_the_release_from_another_checkout(client: Client, task_queue: str, tmp_path: Path) -> None:
    """dana's signed start, captured before it was used, replayed with an attacker's source tree."""
    spec = release_spec(artifact=None, build={"command": "printf x > out.bin", "output": "out.bin"})
    r = rid()
    proof = signed(DANA, action="start_release", subject=r, body=start_body(spec, str(tmp_path / "danas-checkout")), channel="api")
    evil = tmp_path / "evil-checkout"
    evil.mkdir()
    async with running_worker(client, task_queue) as sc:
        await client.start_workflow("ReleaseWorkflow", StartRelease(release_id=r, spec=spec, base_dir=str(evil), proof=proof), id=r, task_queue=task_queue)
        status = await wait_phase(sc, r, "denied")
    assert "the proof was made for body" in (status.reason or "") and status.artifact_digest is None
    assert not (Settings.from_env().state_dir / "workspaces" / r).exists()  # nothing was built


async def test_made_up_remediation_trigger_does_not_skip_the_group_check(client: Client, task_queue: str) -> None:
    """dana (a developer, not on-call) names a release as the trigger to run a certified runbook."""
    async with running_worker(client, task_queue) as sc:
        run_id = f"run-forged-{uuid.uuid4().hex[:8]}"
        args = StartRunbook(run_id=run_id, runbook="restart-service", params={"service": "checkout"}, requested_by=DANA, triggered_by_release="rel-made-up")
        proof = signed(DANA, action="runbook_run", subject=run_id, body=run_expectations(args)["body"])
        await client.start_workflow("RunbookWorkflow", args.model_copy(update={"proof": proof}), id=run_id, task_queue=task_queue)
        status = await sc.runbooks.status(run_id)
        for _ in range(100):
            if status.phase not in ("starting",):
                break
            await asyncio.sleep(0.1)
            status = await sc.runbooks.status(run_id)
        assert status.phase == "refused" and "dana@example.com is not in the groups allowed" in (status.reason or "")
        assert all(s.state == "pending" for s in status.steps)


# --------------------------------------------------------------------------- the actuator


@workflow.defn(name="RogueRelease", sandboxed=False)
class RogueRelease:
    """What a hijacked workflow (or a rogue worker on the task queue) would do: call deploy."""

    @workflow.run
    async def run(self, request: DeployRequest) -> str:
        try:
            await workflow.execute_activity(
                "deploy", request, result_type=DeploymentState, start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=1)
            )
            return "shipped"
        except ActivityError as e:
            return str(getattr(e.cause, "message", e.cause))


async def test_rogue_workflow_cannot_make_the_deploy_activity_ship(client: Client, task_queue: str, tmp_path: Path) -> None:
    marker = tmp_path / "shipped.log"
    target = DeploySpec(target="command", settings={"deploy": f"echo {{digest}} {{weight}} >> {marker}", "current": "true", "rollback": "true"})
    spec = gated_spec().model_copy(update={"deploy": target})
    from workers.worker import build_worker

    settings = Settings.from_env()
    r = rid("rel-rogue")
    start = signed(DANA, action="start_release", subject=r, body=start_body(spec, "/checkout"), channel="api")
    forged_key = tmp_path / "forged.ed25519"
    write_private_key(forged_key, Ed25519PrivateKey.generate())
    from signoff.models import ApprovalEvidence

    forged = [ApprovalEvidence(gate="production", identity=who, proof=approve_proof(r, who, key=forged_key)) for who in (ALICE, BOB)]
    only_one = [ApprovalEvidence(gate="production", identity=ALICE, proof=approve_proof(r, ALICE))]
    requester_self = [ApprovalEvidence(gate="production", identity=who, proof=approve_proof(r, who)) for who in (ALICE, DANA)]
    cases = {
        "no evidence": None,
        "forged approvals": Evidence(release_id=r, spec=spec, base_dir="/checkout", start_proof=start, approvals=forged),
        "one of two approvals": Evidence(release_id=r, spec=spec, base_dir="/checkout", start_proof=start, approvals=only_one),
        "the requester's own approval": Evidence(release_id=r, spec=spec, base_dir="/checkout", start_proof=start, approvals=requester_self),
        "an unsigned start": Evidence(release_id=r, spec=spec, base_dir="/checkout", start_proof=None, approvals=[]),
    }
    async with build_worker(client, settings, task_queue=task_queue, workflows=[RogueRelease]):
        for name, evidence in cases.items():
            request = DeployRequest(release_id=r, service="checkout", digest=DIGEST_A, weight=100, target=target, evidence=evidence)
            answer = await client.execute_workflow("RogueRelease", request, id=f"rogue-{uuid.uuid4().hex[:8]}", task_queue=task_queue, result_type=str)
            assert answer.startswith("refused to ship"), (name, answer)
        assert not marker.exists()  # nothing was ever deployed
        # The same activity ships when the evidence is real: two registered approvers, signed.
        genuine = [ApprovalEvidence(gate="production", identity=who, proof=approve_proof(r, who)) for who in (ALICE, BOB)]
        ok = DeployRequest(release_id=r, service="checkout", digest=DIGEST_A, weight=100, target=target, evidence=Evidence(release_id=r, spec=spec, base_dir="/checkout", start_proof=start, approvals=genuine))
        assert await client.execute_workflow("RogueRelease", ok, id=f"rogue-{uuid.uuid4().hex[:8]}", task_queue=task_queue, result_type=str) == "shipped"
        assert marker.read_text().split() == [DIGEST_A, "100"]


# --------------------------------------------------------------------------- signed approvals, offline


async def test_audit_export_verifies_approvals_offline_and_catches_a_changed_signature(client: Client, task_queue: str, tmp_path: Path) -> None:
    async with running_worker(client, task_queue) as sc:
        r = await gated_release(sc)
        assert (await sc.submit_approval(ApprovalAttempt(release_id=r, identity=ALICE, channel="cli", digest=DIGEST_A))).accepted
        plan = (await sc.status(r)).plan_sha256  # what the Slack button carries
        assert (await sc.submit_approval(attested(ApprovalAttempt(release_id=r, identity=BOB, channel="slack", digest=DIGEST_A, plan=plan)))).accepted
        await wait_phase(sc, r, "succeeded")
        await sc.wait(r)
    settings = Settings.from_env()
    out = tmp_path / "export.json"
    export(r, store_from_settings(settings), public_key_from_settings(settings), out, registry=TrustStore(settings.directory_path, settings.agents_path).current())
    document = json.loads(out.read_text())
    checked = verify_export(document)
    assert checked["ok"], checked["problems"]
    assert sorted((a["by"], a["signed_by"], a["digest"]) for a in checked["approvals"]) == [
        (ALICE, f"person:{ALICE}", DIGEST_A),
        (BOB, "gateway:gateway", DIGEST_A),
    ]
    # Change one byte of alice's signature inside her approval record: the record no longer
    # verifies — by the orchestrator key, and by alice's own key.
    for entry in document["chain"]:
        statement = json.loads(__import__("base64").b64decode(entry["envelope"]["payload"]))
        proof = statement["predicate"]["evidence"].get("proof")
        if statement["predicate"]["kind"] == "approval_attempt" and proof and "alice" in statement["predicate"]["evidence"].get("principal", ""):
            sig = proof["envelope"]["signatures"][0]["sig"]
            proof["envelope"]["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
            entry["envelope"]["payload"] = __import__("base64").b64encode(json.dumps(statement).encode()).decode()
    tampered = verify_export(document)
    assert not tampered["ok"]
    assert any("proof whose signature does not verify with person:alice@example.com's keys" in p for p in tampered["problems"])
    assert any("not signed by the orchestrator key" in p for p in tampered["problems"])


async def test_high_tier_production_gate_is_not_met_by_chat_clicks_alone(client: Client, task_queue: str, tmp_path: Path) -> None:
    """Chat buttons cannot enforce MFA or device trust: the default policy asks one approval of a
    high-risk production change to be signed by the person (CLI key or OIDC)."""
    async with running_worker(client, task_queue) as sc:
        r = rid()
        spec = release_spec(
            environment="production",
            agent={"id": "release-bot"},
            change={"summary": "agent edits the cart", "paths": ["src/checkout/cart.py"]},
            artifact=None,
            build={"command": "printf cart > out.bin", "output": "out.bin"},
        )
        await sc.start_release(spec, release_id=r, base_dir=tmp_path)
        status = await wait_phase(sc, r, "awaiting_approval")
        digest = status.artifact_digest
        assert status.tier == "high" and status.gates[0].min_signed == 1 and status.sandbox == {"build": "hermetic"}
        for who in (CAROL, ALICE):  # sre + release manager, both by Slack click
            result = await sc.submit_approval(attested(ApprovalAttempt(release_id=r, identity=who, channel="slack", digest=digest, plan=status.plan_sha256)))
            assert result.accepted, result.reason
        waiting = await sc.status(r)
        assert waiting.gates[0].state == "open" and len(waiting.gates[0].approvals) == 2
        assert "1 signed by the person" in waiting.gates[0].progress
        bob = await sc.submit_approval(ApprovalAttempt(release_id=r, identity=BOB, channel="cli", digest=digest))
        assert bob.accepted and bob.gate is not None and bob.gate.state == "approved"
        done = await wait_phase(sc, r, "succeeded")
        assert {a.method.split(":")[0] for a in done.gates[0].approvals} == {"gateway", "key"}
